package objstore

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

// source writes data to a file and returns it open for reading, with its
// offset moved away from 0 to show that PutFile does not depend on it.
func source(t *testing.T, data []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if len(data) > 3 {
		f.Seek(3, 0)
	}
	return f
}

func openStore(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// noTemps fails if a temporary file is left in the store.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left in store", e.Name())
		}
	}
}

func checkObject(t *testing.T, s *Store, d verity.Digest, want []byte) {
	t.Helper()
	p := s.Path(d)
	if p != filepath.Join(s.Dir(), d.String()[:2], d.String()[2:]) {
		t.Fatalf("Path = %s", p)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("object %s: content differs (%d bytes, want %d)", d, len(got), len(want))
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o644 {
		t.Errorf("object mode %v, want -rw-r--r--", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(p))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode() != os.ModeDir|0o755 {
		t.Errorf("fan-out directory mode %v, want drwxr-xr-x", di.Mode())
	}
	if !s.Has(d) {
		t.Errorf("Has(%s) = false", d)
	}
}

func TestPutFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "objects") // parents created too
	s := openStore(t, dir, Options{})
	for _, size := range []int{0, 1, 4096, 4097, 1<<20 + 5} {
		data := pattern(size, byte(size))
		d := verity.DigestBytes(data)
		if s.Has(d) {
			t.Fatalf("Has before put")
		}
		src := source(t, data)
		created, err := s.PutFile(src, int64(size), d)
		if err != nil || !created {
			t.Fatalf("PutFile(%d bytes) = %v, %v", size, created, err)
		}
		checkObject(t, s, d, data)

		created, err = s.PutFile(src, int64(size), d)
		if err != nil || created {
			t.Fatalf("second PutFile = %v, %v; want false, nil", created, err)
		}
		if off, _ := src.Seek(0, io.SeekCurrent); size > 3 && off != 3 {
			t.Errorf("PutFile moved the source's offset to %d", off)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	noTemps(t, dir)
}

func TestPutFilePrefix(t *testing.T) {
	// Only the first size bytes are stored.
	data := pattern(10000, 1)
	s := openStore(t, t.TempDir(), Options{})
	d := verity.DigestBytes(data[:5000])
	if _, err := s.PutFile(source(t, data), 5000, d); err != nil {
		t.Fatal(err)
	}
	checkObject(t, s, d, data[:5000])
}

func TestPutBytes(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	data := []byte("hello world\n")
	d, created, err := s.PutBytes(data)
	if err != nil || !created {
		t.Fatalf("PutBytes = %v, %v", created, err)
	}
	if d.String() != "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92" {
		t.Fatalf("digest %s", d)
	}
	checkObject(t, s, d, data)
	if _, created, err = s.PutBytes(data); err != nil || created {
		t.Fatalf("second PutBytes = %v, %v", created, err)
	}
}

func TestPutReader(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{EnableVerity: true})
	data := pattern(200000, 11)
	d, created, err := s.PutReader(bytes.NewReader(data), int64(len(data)))
	if err != nil || !created {
		t.Fatalf("PutReader = %v, %v", created, err)
	}
	if d != verity.DigestBytes(data) {
		t.Fatalf("digest %s, want %s", d, verity.DigestBytes(data))
	}
	checkObject(t, s, d, data)
	// The same content again: the object is reused, the copy dropped.
	if d2, created, err := s.PutReader(bytes.NewReader(data), int64(len(data))); err != nil || created || d2 != d {
		t.Fatalf("second PutReader = %s, %v, %v", d2, created, err)
	}
	noTemps(t, dir)
	noTemps(t, filepath.Join(dir, d.String()[:2]))

	// A reader shorter or longer than size: an error, and nothing stored
	// or left behind.
	other := pattern(5000, 12)
	for _, n := range []int64{int64(len(other)) + 1, int64(len(other)) - 1} {
		if _, _, err := s.PutReader(bytes.NewReader(other), n); err == nil {
			t.Errorf("PutReader of %d bytes with size %d succeeded", len(other), n)
		} else {
			t.Logf("error: %v", err)
		}
	}
	if s.Has(verity.DigestBytes(other)) {
		t.Error("object stored from a reader of the wrong length")
	}
	noTemps(t, dir)
	if s.Created() != 1 {
		t.Errorf("Created = %d, want 1", s.Created())
	}
}

func TestConcurrentPut(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	data := pattern(300000, 7)
	d := verity.DigestBytes(data)
	p := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
	)
	for range 8 {
		wg.Go(func() {
			f, err := os.Open(p)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			c, err := s.PutFile(f, int64(len(data)), d)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			if c {
				created++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	// RENAME_NOREPLACE lets exactly one writer win on filesystems that
	// support it (ext4, XFS, btrfs, tmpfs).
	if created != 1 {
		t.Errorf("%d writers reported creating the object, want 1", created)
	}
	checkObject(t, s, d, data)
	noTemps(t, dir)
}

func TestPutErrorLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	data := pattern(5000, 3)
	d := verity.DigestBytes(data)

	// A file where the fan-out directory should be: the rename fails.
	// (Root ignores permission bits, so a read-only directory would not.)
	if err := os.WriteFile(filepath.Join(dir, d.String()[:2]), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := s.PutFile(source(t, data), int64(len(data)), d)
	if err == nil {
		t.Fatal("PutFile succeeded with a file in place of the fan-out directory")
	}
	if !strings.Contains(err.Error(), s.Path(d)) {
		t.Errorf("error does not name the object: %v", err)
	}
	t.Logf("error: %v", err)
	noTemps(t, dir)
	os.Remove(filepath.Join(dir, d.String()[:2]))

	// A source shorter than claimed: the copy fails and nothing appears.
	_, err = s.PutFile(source(t, data[:100]), int64(len(data)), d)
	if err == nil {
		t.Fatal("PutFile succeeded with a short source")
	}
	t.Logf("error: %v", err)
	if s.Has(d) {
		t.Error("a half-written object is visible")
	}
	noTemps(t, dir)

	// Something that is not a regular file under the object's name.
	if err := os.MkdirAll(s.Path(d), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutFile(source(t, data), int64(len(data)), d); err == nil {
		t.Fatal("PutFile accepted a directory as an existing object")
	}
	noTemps(t, dir)
}

// This host's kernel has no fs-verity. On such a filesystem EnableVerity
// stores objects without it and RequireVerity refuses them.
func TestVerity(t *testing.T) {
	data := pattern(10000, 5)
	d := verity.DigestBytes(data)

	dir := t.TempDir()
	req := openStore(t, dir, Options{RequireVerity: true})
	_, err := req.PutFile(source(t, data), int64(len(data)), d)
	if err == nil {
		t.Skip("this filesystem can do fs-verity; the unsupported path cannot be tested here")
	}
	if !errors.Is(err, verity.ErrUnsupported) {
		t.Fatalf("RequireVerity: %v, want ErrUnsupported", err)
	}
	if !strings.Contains(err.Error(), "filesystem cannot do fs-verity") || !strings.Contains(err.Error(), req.Path(d)) {
		t.Errorf("error does not say what and where: %v", err)
	}
	t.Logf("RequireVerity: %v", err)
	if req.Has(d) {
		t.Error("object stored without the required verity")
	}
	noTemps(t, dir)
	// An object stored earlier without verity is not accepted either.
	plain := openStore(t, dir, Options{})
	if _, err := plain.PutFile(source(t, data), int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	if _, err := req.PutFile(source(t, data), int64(len(data)), d); !errors.Is(err, verity.ErrUnsupported) {
		t.Errorf("RequireVerity with an existing object without verity: %v, want ErrUnsupported", err)
	}

	try := openStore(t, t.TempDir(), Options{EnableVerity: true})
	for i := range 2 { // the second put skips the attempt
		data := pattern(10000, byte(6+i))
		d := verity.DigestBytes(data)
		created, err := try.PutFile(source(t, data), int64(len(data)), d)
		if err != nil || !created {
			t.Fatalf("EnableVerity: %v, %v", created, err)
		}
		checkObject(t, try, d, data)
	}
	if !try.noVerity.Load() {
		t.Error("store did not remember that verity is unsupported")
	}
}

func TestPutFileReadWriteFallback(t *testing.T) {
	kernelCopy = false
	defer func() { kernelCopy = true }()
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	data := pattern(200000, 9)
	d := verity.DigestBytes(data)
	if created, err := s.PutFile(source(t, data), int64(len(data)), d); err != nil || !created {
		t.Fatalf("PutFile = %v, %v", created, err)
	}
	checkObject(t, s, d, data)
	if _, err := s.PutFile(source(t, data[:10]), 50, verity.DigestBytes(data[:50])); err == nil {
		t.Fatal("short source accepted")
	}
	noTemps(t, dir)
}

func TestPutFileAcrossFilesystems(t *testing.T) {
	// A store on tmpfs fed from the test's temporary directory: the
	// kernel may refuse copy_file_range across filesystems (EXDEV), and
	// tmpfs has no reflinks, so whichever way works must be found.
	shm, err := os.MkdirTemp("/dev/shm", "objstore-test")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	s := openStore(t, shm, Options{EnableVerity: true})
	data := pattern(300000, 11)
	d := verity.DigestBytes(data)
	if created, err := s.PutFile(source(t, data), int64(len(data)), d); err != nil || !created {
		t.Fatalf("PutFile = %v, %v", created, err)
	}
	checkObject(t, s, d, data)
	noTemps(t, shm)
}

// TestPutFileKeepsHoles: a sparse file is stored sparse, with the same
// content.
func TestPutFileKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "sparse")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	const size = 256 << 20
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("middle"), 100<<20)
	f.Truncate(size)
	d, err := verity.DigestFile(f)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Open(filepath.Join(dir, "store"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutFile(f, size, d); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var sst unix.Stat_t
	if err := unix.Stat(st.Path(d), &sst); err != nil {
		t.Fatal(err)
	}
	if sst.Size != size || sst.Blocks*512 > 1<<20 {
		t.Fatalf("object: size %d, %d bytes allocated; want %d bytes, sparse", sst.Size, sst.Blocks*512, size)
	}
	got, err := verity.DigestPath(st.Path(d))
	if err != nil || got != d {
		t.Fatalf("object digest %s, %v; want %s", got, err, d)
	}
}

// TestPutFileRefusesChangedSource: without fs-verity nothing else checks
// the copy, so a source that changed after it was hashed must not end up
// stored under the old digest.
func TestPutFileRefusesChangedSource(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.WriteFile(src, bytes.Repeat([]byte("a"), 10000), 0o644)
	d, err := verity.DigestPath(src)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(src, bytes.Repeat([]byte("b"), 10000), 0o644) // same size
	f, _ := os.Open(src)
	defer f.Close()
	st, err := Open(filepath.Join(dir, "store"), Options{EnableVerity: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutFile(f, 10000, d); err == nil {
		t.Fatal("a changed source was stored under its old digest")
	}
	if st.Has(d) {
		t.Fatal("object visible after a refused store")
	}
}

// TestPutReplacesTruncatedObject: an object of the wrong size (a crash
// before its data reached the disk) is replaced, not reused.
func TestPutReplacesTruncatedObject(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(filepath.Join(dir, "store"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("c"), 5000)
	d, _, err := st.PutBytes(content)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(st.Path(d), 0); err != nil {
		t.Fatal(err)
	}
	if _, created, err := st.PutBytes(content); err != nil || !created {
		t.Fatalf("re-put over a truncated object: created %v, %v", created, err)
	}
	got, _ := os.ReadFile(st.Path(d))
	if !bytes.Equal(got, content) {
		t.Fatal("truncated object was not replaced")
	}
}

// TestVerifyExistingReplacesDamagedObject: with VerifyExisting an object
// of the right size but the wrong content is replaced on the next put, and
// Reusable and Verify say it is damaged; without, it is trusted.
func TestVerifyExistingReplacesDamagedObject(t *testing.T) {
	content := bytes.Repeat([]byte("c"), 5000)
	damage := func(st *Store, d verity.Digest) {
		t.Helper()
		if err := os.WriteFile(st.Path(d), bytes.Repeat([]byte("X"), len(content)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, verify := range []bool{false, true} {
		st, err := Open(filepath.Join(t.TempDir(), "store"), Options{VerifyExisting: verify})
		if err != nil {
			t.Fatal(err)
		}
		d, _, err := st.PutBytes(content)
		if err != nil {
			t.Fatal(err)
		}
		damage(st, d)
		st, _ = Open(st.Dir(), Options{VerifyExisting: verify}) // forget what was checked
		if st.Reusable(d) == verify {
			t.Errorf("verify=%v: Reusable of a damaged object = %v", verify, !verify)
		}
		if err := st.Verify(d); !errors.Is(err, ErrDamaged) {
			t.Errorf("verify=%v: Verify = %v, want ErrDamaged", verify, err)
		}
		_, created, err := st.PutBytes(content)
		if err != nil || created != verify {
			t.Errorf("verify=%v: re-put over a damaged object: created %v, %v", verify, created, err)
		}
		got, _ := os.ReadFile(st.Path(d))
		if bytes.Equal(got, content) != verify {
			t.Errorf("verify=%v: damaged object replaced: %v", verify, !verify)
		}
	}

	// Replace puts back what want accepts, and drops anything else.
	st, err := Open(filepath.Join(t.TempDir(), "store"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, _, _ := st.PutBytes(content)
	damage(st, d)
	want := func(x verity.Digest) bool { return x == d }
	if got, placed, err := st.Replace(bytes.NewReader([]byte("other")), 5, want); err != nil || placed || st.Has(got) {
		t.Errorf("Replace with unwanted content: placed %v, stored %v, %v", placed, st.Has(got), err)
	}
	if _, placed, err := st.Replace(bytes.NewReader(content), int64(len(content)), want); err != nil || !placed || st.Verify(d) != nil {
		t.Errorf("Replace with the content: placed %v, %v, verify %v", placed, err, st.Verify(d))
	}
	if ents, _ := os.ReadDir(st.Dir()); len(ents) != 1 {
		t.Errorf("store holds %d entries at the top, want the one fan-out directory", len(ents))
	}
}

func TestPutVerified(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{EnableVerity: true})
	data := pattern(100000, 21)
	d := verity.DigestBytes(data)
	fan := filepath.Join(dir, d.String()[:2])

	// Wrong bytes (one flipped), too few, too many: refused, nothing kept.
	flipped := bytes.Clone(data)
	flipped[5000] ^= 1
	bad := []struct {
		name string
		body []byte
		size int64
	}{
		{"flipped byte", flipped, int64(len(data))},
		{"truncated", data[:len(data)-1], int64(len(data))},
		{"too long", append(bytes.Clone(data), 0), int64(len(data))},
		{"flipped, size unknown", flipped, -1},
	}
	for _, c := range bad {
		_, err := s.PutVerified(bytes.NewReader(c.body), c.size, d)
		if !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("%s: err = %v, want ErrDigestMismatch", c.name, err)
		}
		if s.Has(d) {
			t.Fatalf("%s: object stored", c.name)
		}
		noTemps(t, fan)
	}

	// A read error is passed on, not reported as a mismatch.
	boom := errors.New("connection reset")
	_, err := s.PutVerified(io.MultiReader(bytes.NewReader(data[:10]), errReader{boom}), int64(len(data)), d)
	if !errors.Is(err, boom) || errors.Is(err, ErrDigestMismatch) {
		t.Errorf("read error: err = %v", err)
	}
	noTemps(t, fan)

	for _, size := range []int64{int64(len(data)), -1} {
		created, err := s.PutVerified(bytes.NewReader(data), size, d)
		if err != nil {
			t.Fatal(err)
		}
		if created != (size >= 0) {
			t.Errorf("size %d: created = %v", size, created)
		}
	}
	checkObject(t, s, d, data)
	noTemps(t, fan)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
