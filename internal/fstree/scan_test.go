package fstree

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/objstore"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"github.com/cfs-deploy/cfs-deploy/tests/fulltree"
	"golang.org/x/sys/unix"
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

// fixture is the test tree built by buildTree.
type fixture struct {
	root string
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// shared is the tree buildTree makes once per test run: the tests only
// read it.
var shared struct {
	once sync.Once
	dir  string // removed by TestMain
	fx   *fixture
}

// buildTree returns the shared every-file-type tree (tests/fulltree),
// with a file big enough for the parallel hasher, and what only the
// scanner distinguishes: hard-linked whiteouts (which must not stay
// linked) and a file whose other name is outside the tree.
func buildTree(t *testing.T) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the full test tree needs root")
	}
	shared.once.Do(func() {
		var err error
		shared.dir, err = os.MkdirTemp("", "fstree-test-")
		must(t, err)
		root := filepath.Join(shared.dir, "tree")
		must(t, os.Mkdir(root, 0o755))
		fulltree.Build(t, root, fulltree.Options{Sizes: []int{128 << 10, parallelFileSize + 4097}})
		p := func(rel string) string { return filepath.Join(root, rel) }
		must(t, unix.Mknod(p("special/dir/whiteout2"), unix.S_IFCHR, 0))
		must(t, os.Link(p("special/dir/whiteout2"), p("special/dir/whiteout3")))
		must(t, os.WriteFile(p("links/outside-link"), pattern(5000, 8), 0o644))
		must(t, os.Link(p("links/outside-link"), filepath.Join(shared.dir, "other")))
		shared.fx = &fixture{root: root}
	})
	if shared.fx == nil {
		t.Fatal("the shared test tree could not be built (see the first test that tried)")
	}
	return shared.fx
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// diskXattrs reads path's xattrs independently of the scanner.
func diskXattrs(t *testing.T, path string, userOnly bool) []erofs.Xattr {
	t.Helper()
	size, err := unix.Llistxattr(path, nil)
	must(t, err)
	list := make([]byte, size)
	size, err = unix.Llistxattr(path, list)
	must(t, err)
	var xs []erofs.Xattr
	for _, k := range strings.Split(string(list[:size]), "\x00") {
		if k == "" || userOnly && !strings.HasPrefix(k, "user.") {
			continue
		}
		n, err := unix.Lgetxattr(path, k, nil)
		must(t, err)
		v := make([]byte, n)
		n, err = unix.Lgetxattr(path, k, v)
		must(t, err)
		xs = append(xs, erofs.Xattr{Key: k, Value: string(v[:n])})
	}
	return xs
}

// checkTree compares the scanned tree with the disk, field by field.
func checkTree(t *testing.T, fx *fixture, root *erofs.Node, opts Options) {
	t.Helper()
	var check func(n *erofs.Node, path string)
	check = func(n *erofs.Node, path string) {
		if n.LinkTo != nil {
			return // checked in TestHardlinks
		}
		var st unix.Stat_t
		if n.Parent == nil {
			must(t, unix.Stat(path, &st))
		} else {
			must(t, unix.Lstat(path, &st))
		}
		rel := strings.TrimPrefix(path, fx.root)
		fail := func(field string, got, want any) {
			t.Errorf("%s: %s = %v, want %v", rel, field, got, want)
		}
		if n.Mode != st.Mode {
			fail("Mode", fmt.Sprintf("%o", n.Mode), fmt.Sprintf("%o", st.Mode))
		}
		if n.UID != st.Uid || n.GID != st.Gid {
			fail("UID:GID", fmt.Sprint(n.UID, ":", n.GID), fmt.Sprint(st.Uid, ":", st.Gid))
		}
		wantTime := erofs.Timespec{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}
		if opts.UseEpoch {
			wantTime = erofs.Timespec{}
		}
		if n.Mtime != wantTime {
			fail("Mtime", n.Mtime, wantTime)
		}
		switch n.Type() {
		case erofs.ModeChr, erofs.ModeBlk:
			if n.Rdev != st.Rdev {
				fail("Rdev", n.Rdev, st.Rdev)
			}
		default:
			if n.Rdev != 0 {
				fail("Rdev", n.Rdev, 0)
			}
		}
		if n.IsDir() {
			subdirs := 0
			for _, c := range n.Children {
				if c.IsDir() {
					subdirs++
				}
			}
			if n.Nlink != uint32(2+subdirs) {
				fail("Nlink", n.Nlink, 2+subdirs)
			}
		} else if want := uint32(1); n.Nlink != want && !opts.Hardlinks {
			fail("Nlink", n.Nlink, want)
		}
		if n.Size != uint64(st.Size) {
			fail("Size", n.Size, st.Size)
		}

		var wantX []erofs.Xattr
		if !opts.SkipXattrs {
			wantX = diskXattrs(t, path, opts.UserXattrs)
		}
		if !slices.Equal(n.Xattrs, wantX) {
			fail("Xattrs", n.Xattrs, wantX)
		}

		var wantPayload string
		var wantContent []byte
		var wantDigest verity.Digest
		switch n.Type() {
		case erofs.ModeSymlink:
			target, err := os.Readlink(path)
			must(t, err)
			wantPayload = target
		case erofs.ModeReg:
			data, err := os.ReadFile(path)
			must(t, err)
			switch {
			case len(data) == 0:
			case len(data) <= opts.InlineMax:
				wantContent = data
			case opts.ComputeDigests || opts.Store != nil:
				d := verity.DigestBytes(data)
				wantDigest = d
				wantPayload = d.ObjectPath()
				if opts.Store != nil {
					stored, err := os.ReadFile(opts.Store.Path(d))
					if err != nil || !bytes.Equal(stored, data) {
						t.Errorf("%s: object %s missing or wrong in the store: %v", rel, d, err)
					}
				}
			}
		}
		if n.Payload != wantPayload {
			fail("Payload", n.Payload, wantPayload)
		}
		if !bytes.Equal(n.Content, wantContent) || (n.Content == nil) != (wantContent == nil) {
			fail("Content", n.Content, wantContent)
		}
		if n.Digest != wantDigest {
			fail("Digest", n.Digest, wantDigest)
		}

		if !n.IsDir() {
			if n.Children != nil {
				fail("Children", n.Children, nil)
			}
			return
		}
		ents, err := os.ReadDir(path) // sorted by name, in byte order
		must(t, err)
		var names []string
		for _, e := range ents {
			if opts.SkipDevices && e.Type()&(os.ModeDevice|os.ModeCharDevice) != 0 {
				continue
			}
			names = append(names, e.Name())
		}
		var got []string
		for _, c := range n.Children {
			got = append(got, c.Name)
			if c.Parent != n {
				t.Errorf("%s/%s: wrong Parent", rel, c.Name)
			}
		}
		if !slices.Equal(got, names) {
			t.Errorf("%s: children %q, want %q", rel, got, names)
			return
		}
		for _, c := range n.Children {
			check(c, filepath.Join(path, c.Name))
		}
	}
	if root.Name != "" || root.Parent != nil || !root.IsDir() {
		t.Fatalf("root node: name %q, parent %v, mode %o", root.Name, root.Parent, root.Mode)
	}
	check(root, fx.root)
}

func scan(t *testing.T, root string, opts Options) *erofs.Node {
	t.Helper()
	n, err := Scan(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestScan(t *testing.T) {
	fx := buildTree(t)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"default", DefaultOptions()},
		{"metadata-only", Options{}},
		{"epoch", Options{UseEpoch: true, InlineMax: 64, ComputeDigests: true}},
		{"skip-devices", Options{SkipDevices: true, InlineMax: 64, ComputeDigests: true}},
		{"skip-xattrs", Options{SkipXattrs: true, InlineMax: 64, ComputeDigests: true}},
		{"user-xattrs", Options{UserXattrs: true, InlineMax: 64, ComputeDigests: true}},
		{"inline-5000", Options{InlineMax: 5000, ComputeDigests: true}},
		{"one-thread", Options{InlineMax: 64, ComputeDigests: true, Threads: 1}},
		{"many-threads", Options{InlineMax: 64, ComputeDigests: true, Threads: 16}},
		{"one-file-system", Options{InlineMax: 64, ComputeDigests: true, OneFileSystem: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := scan(t, fx.root, tc.opts)
			checkTree(t, fx, root, tc.opts)
			if tc.opts.SkipDevices {
				erofs.Walk(root, func(n *erofs.Node) error {
					if n.Type() == erofs.ModeChr || n.Type() == erofs.ModeBlk {
						t.Errorf("%s: device kept", n.Path())
					}
					return nil
				})
			}
			if err := erofs.Write(io.Discard, root, erofs.WriteOptions{}); err != nil {
				t.Errorf("image writer refuses the tree: %v", err)
			}
		})
	}
}

func TestScanStore(t *testing.T) {
	fx := buildTree(t)
	dir := filepath.Join(t.TempDir(), "objects")
	st, err := objstore.Open(dir, objstore.Options{EnableVerity: true})
	must(t, err)
	defer st.Close()
	opts := Options{InlineMax: 64, Store: st}
	root := scan(t, fx.root, opts)
	checkTree(t, fx, root, opts)
	must(t, st.Sync())

	// Every object is referenced, and scanning again stores nothing new.
	want := map[string]bool{}
	erofs.Walk(root, func(n *erofs.Node) error {
		if n.Payload != "" && n.IsRegular() {
			want[n.Payload] = true
		}
		return nil
	})
	got := map[string]bool{}
	must(t, filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, path)
			got[rel] = true
		}
		return nil
	}))
	if len(got) != len(want) {
		t.Errorf("store holds %d objects, tree references %d", len(got), len(want))
	}
	for p := range want {
		if !got[p] {
			t.Errorf("object %s missing", p)
		}
	}
	scan(t, fx.root, opts)
}

// dumpTree renders everything the scanner sets, for comparing trees.
func dumpTree(root *erofs.Node) string {
	var b strings.Builder
	erofs.Walk(root, func(n *erofs.Node) error {
		link := ""
		if n.LinkTo != nil {
			link = n.LinkTo.Path()
		}
		fmt.Fprintf(&b, "%q %o %d %d:%d %d %d %v %q %x %x %v %s\n", n.Path(), n.Mode, n.Nlink, n.UID, n.GID,
			n.Rdev, n.Size, n.Mtime, n.Payload, n.Content, n.Digest, n.Xattrs, link)
		return nil
	})
	return b.String()
}

func TestDeterministic(t *testing.T) {
	fx := buildTree(t)
	for _, hl := range []bool{false, true} {
		want := dumpTree(scan(t, fx.root, Options{InlineMax: 64, ComputeDigests: true, Hardlinks: hl, Threads: 1}))
		for _, threads := range []int{2, 3, 8, 32} {
			for range 3 {
				got := dumpTree(scan(t, fx.root, Options{InlineMax: 64, ComputeDigests: true, Hardlinks: hl, Threads: threads}))
				if got != want {
					t.Fatalf("hardlinks=%v threads=%d: tree differs from the single-threaded scan", hl, threads)
				}
			}
		}
	}
}

func TestHardlinks(t *testing.T) {
	fx := buildTree(t)
	get := func(root *erofs.Node, p string) *erofs.Node {
		t.Helper()
		n, err := erofs.Resolve(root, p)
		must(t, err)
		return n
	}

	// Default: like mkcomposefs, every path is an inode of its own, but
	// the shared content is hashed once and the digest given to all.
	root := scan(t, fx.root, DefaultOptions())
	a, b, x := get(root, "/hardlinks/hl2/a"), get(root, "/hardlinks/hl2/b"), get(root, "/hardlinks/hl1/x")
	for _, n := range []*erofs.Node{a, b, x} {
		if n.LinkTo != nil || n.Nlink != 1 || n.Digest != a.Digest || n.Digest.IsZero() || n.Payload != a.Payload {
			t.Errorf("%s: LinkTo %v, Nlink %d, digest %x", n.Path(), n.LinkTo, n.Nlink, n.Digest)
		}
	}

	opts := DefaultOptions()
	opts.Hardlinks = true
	root = scan(t, fx.root, opts)
	checkTree(t, fx, root, opts)
	x = get(root, "/hardlinks/hl1/x") // first in sorted depth-first order
	if x.LinkTo != nil || x.Nlink != 3 || x.Digest.IsZero() {
		t.Fatalf("/hardlinks/hl1/x: LinkTo %v, Nlink %d, digest %x; want the inode, nlink 3", x.LinkTo, x.Nlink, x.Digest)
	}
	data, err := os.ReadFile(filepath.Join(fx.root, "hardlinks/hl2/a"))
	must(t, err)
	if d := verity.DigestBytes(data); x.Digest != d {
		t.Errorf("/hardlinks/hl1/x: digest %x, want %s", x.Digest, d)
	}
	for _, p := range []string{"/hardlinks/hl2/a", "/hardlinks/hl2/b"} {
		n := get(root, p)
		if n.LinkTo != x || n.Mode != x.Mode || !n.Digest.IsZero() || n.Payload != "" || n.Xattrs != nil {
			t.Errorf("%s: want a bare link to /hardlinks/hl1/x, got %+v", p, n)
		}
	}
	// Other types link too; whiteouts never do; a file whose other links
	// are outside the tree is a plain file.
	if f := get(root, "/special/dir/fifo-link"); f.LinkTo != nil || f.Nlink != 2 {
		t.Errorf("/special/dir/fifo-link: LinkTo %v, Nlink %d; want the inode, nlink 2", f.LinkTo, f.Nlink)
	}
	if f := get(root, "/special/fifo"); f.LinkTo != get(root, "/special/dir/fifo-link") {
		t.Errorf("/special/fifo should link to /special/dir/fifo-link (sorted first), got %v", f.LinkTo)
	}
	for _, p := range []string{"/special/dir/whiteout2", "/special/dir/whiteout3"} {
		if n := get(root, p); n.LinkTo != nil || n.Nlink != 1 {
			t.Errorf("%s: whiteout linked or nlink %d", p, n.Nlink)
		}
	}
	if n := get(root, "/links/outside-link"); n.LinkTo != nil || n.Nlink != 1 {
		t.Errorf("/links/outside-link: LinkTo %v, Nlink %d", n.LinkTo, n.Nlink)
	}
	if err := erofs.Write(io.Discard, root, erofs.WriteOptions{}); err != nil {
		t.Errorf("image writer refuses the tree: %v", err)
	}
}

func TestXattrFallback(t *testing.T) {
	// Kernels before 6.13 lack listxattrat/getxattrat; the scanner then
	// uses the path calls. Both must give the same tree.
	fx := buildTree(t)
	opts := DefaultOptions()
	want := dumpTree(scan(t, fx.root, opts))
	s := newScanner(fx.root, Options{InlineMax: 64, ComputeDigests: true, Threads: 2})
	s.xattrs.noAt.Store(true)
	s.noNoatime.Store(true)
	root, err := s.run()
	must(t, err)
	checkTree(t, fx, root, opts)
	if got := dumpTree(root); got != want {
		t.Error("tree differs when read through the fallback calls")
	}
}

func TestOptionErrors(t *testing.T) {
	dir := t.TempDir()
	for _, opts := range []Options{
		{SkipXattrs: true, UserXattrs: true},
		{InlineMax: -1},
		{InlineMax: erofs.MaxInlineContent + 1},
		{Threads: -1},
	} {
		if _, err := Scan(dir, opts); err == nil {
			t.Errorf("Scan accepted %+v", opts)
		}
	}
	if _, err := Scan(filepath.Join(dir, "missing"), Options{}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing root: %v", err)
	}
	must(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o644))
	if _, err := Scan(filepath.Join(dir, "file"), Options{}); err == nil {
		t.Error("Scan accepted a regular file as root")
	}
	// A symlink to a directory is followed at the root only.
	must(t, os.Symlink(".", filepath.Join(dir, "self")))
	root := scan(t, filepath.Join(dir, "self"), Options{})
	if s := root.Lookup("self"); s == nil || !s.IsSymlink() {
		t.Errorf("root through a symlink: %v", dumpTree(root))
	}
}

// Root bypasses permission bits, so an unreadable file cannot be made in
// a test. Entries that vanish or change between listing and reading give
// the same errors and can be produced deterministically by running the
// scanner's steps by hand.
func TestScanErrorsNamePath(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "gone"), pattern(70000, 1), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "grows"), pattern(70000, 1), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "shrinks"), pattern(70000, 1), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "big"), pattern(parallelFileSize+1, 1), 0o644))
	must(t, os.Mkdir(filepath.Join(dir, "subdir"), 0o755))

	s := newScanner(dir, Options{InlineMax: 64, ComputeDigests: true, Threads: 1})
	w := newWorker(s)
	root := &erofs.Node{}
	dirs, files, err := w.scanDir(job{node: root})
	must(t, err)
	if len(dirs) != 1 || len(files) != 4 {
		t.Fatalf("jobs: %d dirs, %d files", len(dirs), len(files))
	}
	must(t, os.Remove(filepath.Join(dir, "gone")))
	f, err := os.OpenFile(filepath.Join(dir, "grows"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	f.Write([]byte("more"))
	f.Close()
	must(t, os.Truncate(filepath.Join(dir, "shrinks"), 100))
	must(t, os.Truncate(filepath.Join(dir, "big"), 100))
	must(t, os.Remove(filepath.Join(dir, "subdir")))

	for _, j := range files {
		err := w.hashFile(j)
		want := filepath.Join(dir, j.node.Name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v does not name the path", j.node.Name, err)
			continue
		}
		if j.node.Name != "gone" && !errors.Is(err, errChanged) {
			t.Errorf("%s: %v, want errChanged", j.node.Name, err)
		}
		t.Logf("%v", err)
	}
	_, _, err = w.scanDir(dirs[0])
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "subdir")) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("removed directory: %v", err)
	}
	t.Logf("%v", err)
	if n := s.openDirs.Load(); n != 0 {
		t.Errorf("%d directory descriptors left open", n)
	}

	// Through Scan, the first error stops the scan and is returned.
	must(t, os.Symlink("x", filepath.Join(dir, "link")))
	if _, err := Scan(dir, Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestProgress(t *testing.T) {
	fx := buildTree(t)
	var calls int
	var files, total int64
	opts := DefaultOptions()
	opts.Progress = func(f, b int64) { calls++; files, total = f, b }
	root := scan(t, fx.root, opts)
	n, _ := countTree(root)
	if calls == 0 || files != n || total == 0 {
		t.Errorf("progress: %d calls, last %d files %d bytes; tree has %d entries", calls, files, total, n)
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(ents)
}

// sysfs files claim 4096 bytes and hold fewer, so reading them inline
// fails like a file that shrank during the scan: a real error from deep
// inside a parallel scan. The scan must stop, name the file and leave no
// descriptor open.
func TestScanErrorStopsScan(t *testing.T) {
	const dir = "/sys/kernel/mm/transparent_hugepage"
	if _, err := os.Stat(filepath.Join(dir, "enabled")); err != nil {
		t.Skipf("no %s: %v", dir, err)
	}
	before := openFDs(t)
	for _, threads := range []int{1, 2, 8} {
		_, err := Scan(dir, Options{InlineMax: 4096, SkipXattrs: true, Threads: threads})
		if err == nil || !strings.Contains(err.Error(), dir+"/") {
			t.Fatalf("threads %d: error %v does not name a file under %s", threads, err, dir)
		}
		t.Logf("threads %d: %v", threads, err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open before the scans, %d after", before, after)
	}
}

func TestOneFileSystem(t *testing.T) {
	root := t.TempDir()
	mnt := filepath.Join(root, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "mode=0710"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	must(t, os.WriteFile(filepath.Join(mnt, "inside"), []byte("x"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "outside"), []byte("y"), 0o644))

	n := scan(t, root, Options{})
	if m := n.Lookup("mnt"); m == nil || m.Lookup("inside") == nil {
		t.Fatalf("without OneFileSystem the mount is not crossed: %s", dumpTree(n))
	}
	n = scan(t, root, Options{OneFileSystem: true})
	m := n.Lookup("mnt")
	if m == nil || len(m.Children) != 0 || n.Lookup("outside") == nil {
		t.Fatalf("with OneFileSystem: %s", dumpTree(n))
	}
	// The mount point shows the mounted filesystem's root, as lstat does.
	var st unix.Stat_t
	must(t, unix.Lstat(mnt, &st))
	if m.Mode != st.Mode || m.Mode&0o777 != 0o710 || m.Nlink != 2 {
		t.Errorf("mount point: mode %o nlink %d, want %o and 2", m.Mode, m.Nlink, st.Mode)
	}
}
