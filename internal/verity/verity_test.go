package verity

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// refDigest is a deliberately naive fs-verity implementation: build every
// tree level in memory, then hash a descriptor laid out by encoding/binary
// from a struct that mirrors the kernel's declaration field by field.
func refDigest(data []byte) Digest {
	var root [32]byte
	if len(data) > 0 {
		var level [][32]byte
		for off := 0; off < len(data); off += 4096 {
			blk := make([]byte, 4096)
			copy(blk, data[off:])
			level = append(level, sha256.Sum256(blk))
		}
		for len(level) > 1 {
			var next [][32]byte
			for i := 0; i < len(level); i += 128 {
				blk := make([]byte, 4096)
				for j := i; j < len(level) && j < i+128; j++ {
					copy(blk[(j-i)*32:], level[j][:])
				}
				next = append(next, sha256.Sum256(blk))
			}
			level = next
		}
		root = level[0]
	}
	desc := struct {
		Version       uint8
		HashAlgorithm uint8
		LogBlockSize  uint8
		SaltSize      uint8
		Reserved1     uint32
		DataSize      uint64
		RootHash      [64]byte
		Salt          [32]byte
		Reserved2     [144]byte
	}{Version: 1, HashAlgorithm: 1, LogBlockSize: 12, DataSize: uint64(len(data))}
	copy(desc.RootHash[:], root[:])
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, &desc); err != nil {
		panic(err)
	}
	if buf.Len() != 256 {
		panic("descriptor is not 256 bytes")
	}
	return sha256.Sum256(buf.Bytes())
}

func pseudoRandom(n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	rand.NewChaCha8(s).Read(b)
	return b
}

func writeTemp(t testing.TB, dir string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, "data")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fsverityTool returns the digest printed by fsverity-utils, or "" when
// the tool is not installed.
func fsverityTool(t *testing.T, path string) string {
	t.Helper()
	bin, err := exec.LookPath("fsverity")
	if err != nil {
		return ""
	}
	out, err := exec.Command(bin, "digest", "--compact", "--hash-alg=sha256", "--block-size=4096", path).Output()
	if err != nil {
		t.Fatalf("fsverity digest %s: %v", path, err)
	}
	return strings.TrimSpace(string(out))
}

func TestKnownVectors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"hello world\n", "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"},
		{"foo bar baz\n", "91e7d88cb7bc9cf6d8db3b0ecf89af4abf204bef5b3ade5113d5b62ef374e70b"},
		{"", "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"},
	} {
		if got := DigestBytes([]byte(tc.in)).String(); got != tc.want {
			t.Errorf("DigestBytes(%q) = %s, want %s", tc.in, got, tc.want)
		}
		if got := refDigest([]byte(tc.in)).String(); got != tc.want {
			t.Errorf("refDigest(%q) = %s, want %s (reference implementation is wrong)", tc.in, got, tc.want)
		}
		p := writeTemp(t, t.TempDir(), []byte(tc.in))
		d, err := DigestPath(p)
		if err != nil {
			t.Fatal(err)
		}
		if d.String() != tc.want {
			t.Errorf("DigestPath(%q) = %s, want %s", tc.in, d, tc.want)
		}
	}
}

func TestDigestSizes(t *testing.T) {
	sizes := []int{
		0, 1, 4095, 4096, 4097,
		128 * 4096,     // exactly one full block of hashes
		128*4096 + 1,   // second hash block appears
		1<<20 + 1,      //
		128*4096*2 + 5, //
		parallelThreshold,
		parallelThreshold + 1,      // smallest parallel DigestFile
		9<<20 + 12345,              // parallel, ragged last segment
		128*4096*5 + segmentSize/2, // segment ends mid-way
	}
	if !testing.Short() {
		sizes = append(sizes,
			128*128*4096,      // two levels, exactly full
			128*128*4096+4097, // three levels
		)
	}
	_, haveTool := exec.LookPath("fsverity")
	if haveTool != nil {
		t.Log("fsverity command not installed; skipping comparison with fsverity-utils")
	}
	dir := t.TempDir()
	for i, size := range sizes {
		data := pseudoRandom(size, uint64(i))
		want := refDigest(data)

		if got := DigestBytes(data); got != want {
			t.Errorf("size %d: DigestBytes = %s, want %s", size, got, want)
		}

		// Odd write sizes straddle block boundaries in every way.
		h := NewHasher()
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		for rest := data; len(rest) > 0; {
			n := min(len(rest), rng.IntN(3*4096)+1)
			h.Write(rest[:n])
			rest = rest[n:]
		}
		if got := h.Sum(); got != want {
			t.Errorf("size %d: Hasher = %s, want %s", size, got, want)
		}
		if h.Size() != uint64(size) {
			t.Errorf("size %d: Hasher.Size = %d", size, h.Size())
		}

		d, n, err := DigestReader(iotest.HalfReader(bytes.NewReader(data)))
		if err != nil || d != want || n != int64(size) {
			t.Errorf("size %d: DigestReader = %s, %d, %v; want %s", size, d, n, err, want)
		}

		p := writeTemp(t, dir, data)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := DigestFile(f); err != nil || got != want {
			t.Errorf("size %d: DigestFile = %s, %v; want %s", size, got, err, want)
		}
		// Force the parallel path with more workers than this machine
		// may have, so segment scheduling is exercised regardless of
		// GOMAXPROCS and of the size threshold.
		if size > 128*4096 {
			for _, w := range []int{1, 3, 7} {
				if got, err := digestFileParallel(f, int64(size), w); err != nil || got != want {
					t.Errorf("size %d: digestFileParallel(%d workers) = %s, %v; want %s", size, w, got, err, want)
				}
			}
		}
		f.Close()

		if haveTool == nil {
			if got := fsverityTool(t, p); got != want.String() {
				t.Errorf("size %d: fsverity digest = %s, want %s", size, got, want)
			}
		}
	}
}

func TestHasherSumAndReset(t *testing.T) {
	data := pseudoRandom(3*128*4096+100, 42)
	h := NewHasher()
	h.Write(data[:200000])
	if got, want := h.Sum(), refDigest(data[:200000]); got != want {
		t.Fatalf("intermediate Sum = %s, want %s", got, want)
	}
	h.Write(data[200000:])
	if got, want := h.Sum(), refDigest(data); got != want {
		t.Fatalf("Sum after Sum = %s, want %s", got, want)
	}
	h.Reset()
	if got, want := h.Sum(), refDigest(nil); got != want {
		t.Fatalf("Sum after Reset = %s, want %s", got, want)
	}
	h.Write(data[:5000])
	if got, want := h.Sum(), refDigest(data[:5000]); got != want {
		t.Fatalf("Sum after Reset and Write = %s, want %s", got, want)
	}
	var zero Hasher
	zero.Write([]byte("hello world\n"))
	if got := zero.Sum().String(); got != "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92" {
		t.Fatalf("zero Hasher = %s", got)
	}
}

func TestDigestFileNotRegular(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		w.Write([]byte("foo bar baz\n"))
		w.Close()
	}()
	d, err := DigestFile(r)
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != "91e7d88cb7bc9cf6d8db3b0ecf89af4abf204bef5b3ade5113d5b62ef374e70b" {
		t.Fatalf("DigestFile(pipe) = %s", d)
	}
}

func TestDigestErrors(t *testing.T) {
	boom := errors.New("boom")
	if _, _, err := DigestReader(iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Errorf("DigestReader error = %v, want wrapping %v", err, boom)
	}
	f, err := os.Open(writeTemp(t, t.TempDir(), []byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := DigestFile(f); !errors.Is(err, os.ErrClosed) {
		t.Errorf("DigestFile(closed) error = %v, want os.ErrClosed", err)
	}
	if _, err := DigestPath(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("DigestPath(missing) error = %v, want os.ErrNotExist", err)
	}
}

func TestDigestFileSizeChanged(t *testing.T) {
	data := pseudoRandom(3*segmentSize, 7)
	p := writeTemp(t, t.TempDir(), data)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Claim a larger size than the file has: as if it shrank after Stat.
	if _, err := digestFileParallel(f, int64(len(data))+4096, 2); !errors.Is(err, errFileChanged) {
		t.Errorf("shrunk file: error = %v, want %v", err, errFileChanged)
	}
	// Claim a smaller size: as if it grew after Stat.
	if _, err := digestFileParallel(f, int64(len(data))-4096, 2); !errors.Is(err, errFileChanged) {
		t.Errorf("grown file: error = %v, want %v", err, errFileChanged)
	}
}

func TestDigestFileAllocs(t *testing.T) {
	p := writeTemp(t, t.TempDir(), pseudoRandom(20000, 3))
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	DigestFile(f) // warm the pool
	allocs := testing.AllocsPerRun(100, func() { DigestFile(f) })
	// Stat allocates its FileInfo; nothing should scale with the data.
	if allocs > 3 {
		t.Errorf("DigestFile of a small file: %.1f allocations per call, want <= 3", allocs)
	}
}

func TestParseDigest(t *testing.T) {
	const s = "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"
	d, err := ParseDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != s {
		t.Fatalf("round trip = %s", d)
	}
	if d2, err := ParseDigest(strings.ToUpper(s)); err != nil || d2 != d {
		t.Fatalf("upper case: %s, %v", d2, err)
	}
	if d != DigestBytes([]byte("hello world\n")) {
		t.Fatalf("parsed digest differs from computed one")
	}

	for _, tc := range []struct{ in, msg string }{
		{"", "empty digest, want 64 hex digits"},
		{s[:63], "has 63 characters, want 64 hex digits"},
		{s + "0", "has 65 characters"},
		{"sha256:" + s, "has 71 characters"},
		{"g" + s[1:], `non-hex character "g" at offset 0`},
		{s[:40] + " " + s[41:], `non-hex character " " at offset 40`},
		{s[:63] + "\xff", `non-hex character "\xff" at offset 63`},
		{strings.Repeat("a", 10000), "has 10000 characters"},
	} {
		_, err := ParseDigest(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseDigest(%.70q) error = %v, want containing %q", tc.in, err, tc.msg)
		}
		if err != nil && len(err.Error()) > 300 {
			t.Errorf("ParseDigest error is %d bytes long", len(err.Error()))
		}
	}
}

func TestObjectPath(t *testing.T) {
	d := DigestBytes([]byte("hello world\n"))
	if got, want := d.ObjectPath(), "37/061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"; got != want {
		t.Errorf("ObjectPath = %s, want %s", got, want)
	}
	var z Digest
	z[0] = 0x0a
	if got := z.ObjectPath(); got != "0a/"+strings.Repeat("0", 62) {
		t.Errorf("ObjectPath = %s", got)
	}
}

func TestMismatchError(t *testing.T) {
	want := DigestBytes([]byte("a"))
	got := DigestBytes([]byte("b"))
	err := error(&MismatchError{Path: "/x/y", Want: want, Got: got})
	msg := err.Error()
	for _, part := range []string{"/x/y", want.String(), got.String()} {
		if !strings.Contains(msg, part) {
			t.Errorf("MismatchError %q does not mention %s", msg, part)
		}
	}
	if strings.Index(msg, want.String()) > strings.Index(msg, got.String()) {
		t.Errorf("MismatchError %q should name the expected digest first", msg)
	}
}

func TestDescriptorLayout(t *testing.T) {
	// Pin the encoding of a non-trivial size so a byte-order slip in the
	// descriptor cannot hide behind the small test vectors.
	var root [32]byte
	for i := range root {
		root[i] = byte(i)
	}
	const size = 0x0102030405060708
	var desc [256]byte
	copy(desc[:], []byte{1, 1, 12, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1})
	copy(desc[16:], root[:])
	if got, want := descriptorDigest(root, size), Digest(sha256.Sum256(desc[:])); got != want {
		t.Errorf("descriptorDigest = %s, want %s (descriptor %s)", got, want, hex.EncodeToString(desc[:32]))
	}
}

// TestDigestText: a digest is spelled the same way in JSON (as a map key
// too) as String spells it, and reads back from either case.
func TestDigestText(t *testing.T) {
	d := DigestBytes([]byte("hello world\n"))
	b, err := json.Marshal(struct {
		D Digest          `json:"d"`
		Z Digest          `json:"z,omitzero"`
		M map[Digest]bool `json:"m"`
	}{D: d, M: map[Digest]bool{d: true}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"d":"` + d.String() + `","m":{"` + d.String() + `":true}}`
	if string(b) != want {
		t.Fatalf("JSON %s, want %s", b, want)
	}
	var back struct{ D Digest }
	if err := json.Unmarshal([]byte(`{"D":"`+strings.ToUpper(d.String())+`"}`), &back); err != nil || back.D != d {
		t.Fatalf("read back %s, %v", back.D, err)
	}
	if err := json.Unmarshal([]byte(`{"D":"abc"}`), &back); err == nil || !strings.Contains(err.Error(), "has 3 characters") {
		t.Fatalf("a short digest in JSON: %v", err)
	}
	if !(Digest{}).IsZero() || d.IsZero() {
		t.Fatal("IsZero")
	}
}
