package erofs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"github.com/cfs-deploy/cfs-deploy/tests/conformance"
)

var updateCorrupt = flag.Bool("update-corrupt", false, "rewrite testdata/corrupt/*.img from the cases in reader_test.go")

// testTree builds a tree that exercises every part of the format the
// reader has to handle.
func testTree(t testing.TB) *Node {
	t.Helper()
	const t0 = 1633950376
	mt := Timespec{Sec: t0}
	root := NewDirectory("", 0o755)
	root.Mtime = mt
	root.Xattrs = []Xattr{{"user.root", "1"}, {xattrSecuritySELinux, "system_u:object_r:root_t:s0\x00"}}
	add := func(parent *Node, n *Node) *Node {
		t.Helper()
		if n.Mtime == (Timespec{}) {
			n.Mtime = mt
		}
		if n.Nlink == 0 {
			n.Nlink = 1
		}
		if err := parent.AddChild(n); err != nil {
			t.Fatalf("add %s: %v", n.Name, err)
		}
		return n
	}
	dir := func(parent *Node, name string) *Node {
		d := NewDirectory(name, 0o755)
		return add(parent, d)
	}
	file := func(parent *Node, name string, content string) *Node {
		return add(parent, &Node{Name: name, Mode: ModeReg | 0o644, Size: uint64(len(content)), Content: []byte(content)})
	}
	digest := verity.Digest(bytes.Repeat([]byte{0xab}, 32))
	payload := "ab/" + strings.Repeat("ab", 31)

	a := dir(root, "a")
	b := dir(a, "b")
	file(b, "deep.txt", "hi\n")
	ext := add(a, &Node{Name: "ext", Mode: ModeReg | 0o755, Size: 123456, Payload: payload, Digest: digest, Nlink: 2,
		Xattrs: []Xattr{{"user.shared", "v"}, {"trusted.overlay.redirect", "/escaped"}}})
	add(a, &Node{Name: "hl", Mode: ext.Mode, LinkTo: ext})
	add(root, &Node{Name: "bin", Mode: ModeSymlink | 0o777, Payload: "usr/bin", Size: 7})
	long := strings.Repeat("x", 4000)
	add(root, &Node{Name: "long", Mode: ModeSymlink | 0o777, Payload: long, Size: uint64(len(long))})
	add(root, &Node{Name: "chr", Mode: ModeChr | 0o600, Rdev: 0x0501})
	add(root, &Node{Name: "blk", Mode: ModeBlk | 0o600, Rdev: 0x0802})
	add(root, &Node{Name: "fifo", Mode: ModeFifo | 0o600})
	add(root, &Node{Name: "sock", Mode: ModeSock | 0o600})
	wd := dir(root, "wd")
	add(wd, &Node{Name: "wh", Mode: ModeChr | 0o644})
	file(root, "inline4095", strings.Repeat("A", 4095))
	file(root, "inline4096", strings.Repeat("B", 4096))
	file(root, "inline4097", strings.Repeat("C", 4097))
	file(root, "empty", "")
	add(root, &Node{Name: "ext-bare", Mode: ModeReg | 0o644, Size: 10, Xattrs: []Xattr{{"user.shared", "v"}}})
	add(root, &Node{Name: "big", Mode: ModeReg | 0o644, Size: 9000000000000000, Payload: payload})
	add(root, &Node{Name: "extended", Mode: ModeReg | 0o644, Size: 5, Content: []byte("hello"),
		UID: 70000, GID: 80000, Mtime: Timespec{Sec: t0 + 10, Nsec: 5}})
	add(root, &Node{Name: "neg", Mode: ModeReg | 0o644, Mtime: Timespec{Sec: -5, Nsec: 999999999}})
	add(root, &Node{Name: "acl", Mode: ModeReg | 0o644, Xattrs: []Xattr{
		{xattrACLAccess, "\x02\x00\x00\x00"}, {"trusted.overlay.overlay.x", "deep"}, {xattrUserOpaque, "y"},
		{"lustre.foo", "l"}, {"other.name", "o"}}})
	add(root, &Node{Name: "-x", Mode: ModeReg | 0o644})
	add(root, &Node{Name: "00", Mode: ModeReg | 0o644})
	many := dir(root, "many")
	for i := 0; i < 400; i++ {
		file(many, fmt.Sprintf("entry-with-a-long-name-%04d", i), "")
	}
	add(many, &Node{Name: "zz-link", Mode: ModeReg | 0o644, LinkTo: rdMust(Resolve(root, "/a/b/deep.txt"))})
	return root
}

func rdMust[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func mustWrite(t testing.TB, root *Node, opts WriteOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, root, opts); err != nil {
		t.Fatalf("write: %v", err)
	}
	return buf.Bytes()
}

func mustRead(t testing.TB, img []byte) *Image {
	t.Helper()
	im, err := ReadImage(img)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return im
}

// pinned returns write options that reproduce the version of im.
func pinned(im *Image) WriteOptions {
	return WriteOptions{MinVersion: im.Version, MaxVersion: im.Version}
}

func TestReadTestTree(t *testing.T) {
	data := mustWrite(t, testTree(t), DefaultWriteOptions)
	im := mustRead(t, data)
	if im.Version != 1 {
		t.Errorf("version %d, want 1 (tree has a whiteout)", im.Version)
	}
	if im.Flags != headerFlagHasACL {
		t.Errorf("flags %#x, want HAS_ACL", im.Flags)
	}
	root := im.Root
	get := func(p string) *Node {
		t.Helper()
		n, err := Resolve(root, p)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The root's opaque=y and the whiteout stubs are gone; "00" is ours.
	if _, ok := root.GetXattr(xattrOpaque); ok {
		t.Errorf("root keeps trusted.overlay.opaque")
	}
	if v, _ := root.GetXattr("user.root"); v != "1" {
		t.Errorf("root user.root = %q", v)
	}
	var names []string
	for _, c := range root.Children {
		names = append(names, c.Name)
	}
	want := "-x 00 a acl big bin blk chr empty ext-bare extended fifo inline4095 inline4096 inline4097 long many neg sock wd"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("root children\n got %s\nwant %s", got, want)
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("children not sorted")
	}
	if root.Nlink != 2+3 {
		t.Errorf("root nlink %d, want 5", root.Nlink)
	}

	ext := get("/a/ext")
	if ext.Payload != "ab/"+strings.Repeat("ab", 31) || ext.Digest != verity.Digest(bytes.Repeat([]byte{0xab}, 32)) ||
		ext.Size != 123456 || ext.Content != nil || ext.Nlink != 2 {
		t.Errorf("ext = %+v", ext)
	}
	if v, ok := ext.GetXattr("trusted.overlay.redirect"); !ok || v != "/escaped" {
		t.Errorf("escaped redirect not unescaped: %q %v (%v)", v, ok, ext.Xattrs)
	}
	if hl := get("/a/hl"); hl.LinkTo != ext || hl.Mode != ext.Mode {
		t.Errorf("hl = %+v, want link to /a/ext", hl)
	}
	if l := get("/many/zz-link"); l.LinkTo != get("/a/b/deep.txt") {
		t.Errorf("zz-link links to %v", l.LinkTo)
	}
	if c := get("/a/b/deep.txt"); string(c.Content) != "hi\n" || c.Size != 3 {
		t.Errorf("deep.txt = %+v", c)
	}
	for _, n := range []int{4095, 4096, 4097} {
		c := get(fmt.Sprintf("/inline%d", n))
		if len(c.Content) != n || c.Size != uint64(n) || c.Content[n-1] != "ABC"[n-4095] {
			t.Errorf("inline%d: size %d, %d bytes", n, c.Size, len(c.Content))
		}
	}
	if e := get("/empty"); e.Content != nil || e.Size != 0 || e.Payload != "" {
		t.Errorf("empty = %+v", e)
	}
	if e := get("/ext-bare"); e.Size != 10 || e.Payload != "" || !e.Digest.IsZero() {
		t.Errorf("ext-bare = %+v", e)
	}
	if e := get("/big"); e.Size != 9000000000000000 || e.Payload == "" {
		t.Errorf("big = %+v", e)
	}
	if s := get("/bin"); s.Payload != "usr/bin" || s.Size != 7 {
		t.Errorf("bin = %+v", s)
	}
	if s := get("/long"); len(s.Payload) != 4000 {
		t.Errorf("long symlink %d bytes", len(s.Payload))
	}
	if c := get("/chr"); c.Rdev != 0x0501 || c.Type() != ModeChr {
		t.Errorf("chr = %+v", c)
	}
	if c := get("/blk"); c.Rdev != 0x0802 || c.Type() != ModeBlk {
		t.Errorf("blk = %+v", c)
	}
	if w := get("/wd/wh"); !w.IsWhiteout() || w.Mode != ModeChr|0o644 || w.Size != 0 || len(w.Xattrs) != 0 {
		t.Errorf("whiteout = %+v", w)
	}
	wd := get("/wd")
	if v, _ := wd.GetXattr(xattrOpaque); v != "x" {
		t.Errorf("v1 whiteout dir: trusted.overlay.opaque = %q (%v)", v, wd.Xattrs)
	}
	if v, _ := wd.GetXattr(xattrUserOpaque); v != "x" {
		t.Errorf("v1 whiteout dir: user.overlay.opaque = %q", v)
	}
	if len(wd.Xattrs) != 2 {
		t.Errorf("whiteout dir xattrs %v", wd.Xattrs)
	}
	x := get("/extended")
	if x.UID != 70000 || x.GID != 80000 || x.Mtime != (Timespec{1633950386, 5}) {
		t.Errorf("extended = %+v", x)
	}
	// /neg has the minimum mtime, so its inode is compact and its mtime
	// is the superblock's build time.
	if n := get("/neg"); n.Mtime != (Timespec{-5, 999999999}) {
		t.Errorf("neg mtime %+v", n.Mtime)
	}
	acl := get("/acl")
	for _, kv := range [][2]string{{xattrACLAccess, "\x02\x00\x00\x00"}, {"trusted.overlay.overlay.x", "deep"},
		{xattrUserOpaque, "y"}, {"lustre.foo", "l"}, {"other.name", "o"}} {
		if v, ok := acl.GetXattr(kv[0]); !ok || v != kv[1] {
			t.Errorf("acl %s = %q, %v; xattrs %q", kv[0], v, ok, acl.Xattrs)
		}
	}
	if len(get("/many").Children) != 401 {
		t.Errorf("many has %d children", len(get("/many").Children))
	}
	// Parent pointers are consistent.
	_ = Walk(root, func(n *Node) error {
		for _, c := range n.Children {
			if c.Parent != n {
				t.Errorf("%s: parent pointer wrong", c.Path())
			}
		}
		return nil
	})

	// image -> tree -> image gives the same bytes.
	if again := mustWrite(t, root, pinned(im)); !bytes.Equal(again, data) {
		t.Errorf("rewrite differs: %d vs %d bytes", len(again), len(data))
	}
}

// TestReadXattrOrder: inline entries in stored order, then shared ones.
func TestReadXattrOrder(t *testing.T) {
	root := NewDirectory("", 0o755)
	for _, name := range []string{"f1", "f2"} {
		root.AddChild(&Node{Name: name, Mode: ModeReg | 0o644, Nlink: 1, Xattrs: []Xattr{
			{"user.b", "shared"}, {"user.z", "inline-" + name}, {"user.a", "shared"}, {"user.y", "inline-" + name}}})
	}
	im := mustRead(t, mustWrite(t, root, DefaultWriteOptions))
	f1 := rdMust(Resolve(im.Root, "f1"))
	var got []string
	for _, x := range f1.Xattrs {
		got = append(got, x.Key+"="+x.Value)
	}
	want := "user.y=inline-f1 user.z=inline-f1 user.a=shared user.b=shared"
	if s := strings.Join(got, " "); s != want {
		t.Errorf("xattrs %s, want %s", s, want)
	}
}

func TestReadVersion0Whiteout(t *testing.T) {
	root := NewDirectory("", 0o755)
	root.AddChild(&Node{Name: "wh", Mode: ModeChr | 0o600, Nlink: 1})
	data := mustWrite(t, root, WriteOptions{0, 0})
	im := mustRead(t, data)
	if im.Version != 0 {
		t.Fatalf("version %d", im.Version)
	}
	if len(im.Root.Xattrs) != 0 {
		t.Errorf("v0 root xattrs %v, want none", im.Root.Xattrs)
	}
	if w := rdMust(Resolve(im.Root, "wh")); !w.IsWhiteout() {
		t.Errorf("wh = %+v", w)
	}
	if again := mustWrite(t, im.Root, pinned(im)); !bytes.Equal(again, data) {
		t.Errorf("rewrite differs")
	}
}

func TestReadImageFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "img")
	data := mustWrite(t, testTree(t), DefaultWriteOptions)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadImageFile(p); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxImageFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = ReadImageFile(big)
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
	if _, err := ReadImageFile(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(p, data[:len(data)-1], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadImageFile(p); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), p) {
		t.Errorf("truncated file: %v", err)
	}
}

// TestReadUpstreamAssets round-trips every golden asset: dump -> image ->
// tree -> image must give the same bytes.
func TestReadUpstreamAssets(t *testing.T) {
	for _, a := range loadGoldenAssets(t) {
		t.Run(a.Name, func(t *testing.T) {
			if testing.Short() && len(a.Dump) > 1<<20 {
				t.Skip("large asset")
			}
			root, err := ParseDump(bytes.NewReader(a.Dump), DumpOptions{})
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			data := mustWrite(t, root, a.opts)
			im := mustRead(t, data)
			if again := mustWrite(t, im.Root, pinned(im)); !bytes.Equal(again, data) {
				t.Fatalf("image -> tree -> image differs (%d vs %d bytes)", len(again), len(data))
			}
		})
	}
}

// ---- corruption ----

// imageMap locates structures of a valid image for the corruption tests.
type imageMap struct {
	data []byte
	root uint64
	t    testing.TB
}

func newImageMap(t testing.TB, data []byte) *imageMap {
	t.Helper()
	_, h, err := newImgReader(data)
	if err != nil {
		t.Fatal(err)
	}
	return &imageMap{data: data, root: h.rootNid, t: t}
}

// r returns a fresh reader, so that the helpers' reads do not use up the
// budgets of one.
func (m *imageMap) r() *imgReader {
	r, _, err := newImgReader(m.data)
	if err != nil {
		m.t.Fatal(err)
	}
	return r
}

// nid resolves an absolute path to its inode number.
func (m *imageMap) nid(t testing.TB, path string) uint64 {
	t.Helper()
	nid := m.root
	for _, name := range strings.Split(strings.Trim(path, "/"), "/") {
		if name == "" {
			continue
		}
		d := m.dirent(t, nid, name)
		nid = le.Uint64(m.data[d:])
	}
	return nid
}

// entry returns the dirent called name in directory dirNid.
func (m *imageMap) entry(t testing.TB, dirNid uint64, name string) rdDirent {
	t.Helper()
	w := rdWhere{nid: dirNid}
	ino, err := m.r().readInode(w)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := m.r().readDir(w, ino, m.parentOf(t, dirNid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.name == name {
			return e
		}
	}
	t.Fatalf("no entry %q in nid %d", name, dirNid)
	return rdDirent{}
}

// dirent returns the offset of the dirent called name in directory dirNid.
func (m *imageMap) dirent(t testing.TB, dirNid uint64, name string) uint64 {
	return m.entry(t, dirNid, name).off
}

// nameOff returns the offset of the name of that dirent.
func (m *imageMap) nameOff(t testing.TB, dirNid uint64, name string) uint64 {
	return m.entry(t, dirNid, name).nameAt
}

// parentOf reads the ".." entry of directory nid.
func (m *imageMap) parentOf(t testing.TB, nid uint64) uint64 {
	t.Helper()
	ino, err := m.r().readInode(rdWhere{nid: nid})
	if err != nil {
		t.Fatal(err)
	}
	blocks, tail, ferr := m.r().flatData(rdWhere{nid: nid}, ino, "dir")
	if ferr != nil {
		t.Fatal(ferr)
	}
	chunk := blocks
	if len(chunk) == 0 {
		chunk = tail
	}
	chunk = chunk[:min(len(chunk), BlockSize)]
	n := int(le.Uint16(chunk[8:])) / direntSize
	for i := 0; i+1 < n; i++ {
		off, end := le.Uint16(chunk[i*direntSize+8:]), le.Uint16(chunk[(i+1)*direntSize+8:])
		if string(chunk[off:end]) == ".." {
			return le.Uint64(chunk[i*direntSize:])
		}
	}
	t.Fatalf("no .. in %d", nid)
	return 0
}

func (m *imageMap) inodeOff(t testing.TB, path string) uint64 {
	return m.nid(t, path) * inodeSlotSize
}

// xattrOff returns the offset of the first inline xattr entry of path.
func (m *imageMap) xattrOff(t testing.TB, path string) uint64 {
	t.Helper()
	off := m.inodeOff(t, path)
	ino, err := m.r().readInode(rdWhere{nid: off / inodeSlotSize})
	if err != nil {
		t.Fatal(err)
	}
	if ino.icount == 0 {
		t.Fatalf("%s has no xattrs", path)
	}
	base := off + ino.isize
	return base + xattrIbodyHeaderSize + 4*uint64(m.data[base+4])
}

type corruption struct {
	name  string
	kind  error
	msg   string // substring of the error message
	apply func(t testing.TB, m *imageMap) []byte
}

func put16(b []byte, off uint64, v uint16) { le.PutUint16(b[off:], v) }
func put32(b []byte, off uint64, v uint32) { le.PutUint32(b[off:], v) }
func put64(b []byte, off uint64, v uint64) { le.PutUint64(b[off:], v) }

// corruptTree is the small tree the corruption cases damage.
func corruptTree(t testing.TB) *Node {
	root := NewDirectory("", 0o755)
	a := NewDirectory("a", 0o755)
	root.AddChild(a)
	b := NewDirectory("b", 0o755)
	a.AddChild(b)
	b.AddChild(&Node{Name: "f", Mode: ModeReg | 0o644, Nlink: 1, Content: []byte("data"), Size: 4,
		Xattrs: []Xattr{{"user.k", "value"}}})
	b.AddChild(&Node{Name: "g", Mode: ModeReg | 0o644, Nlink: 1})
	root.AddChild(&Node{Name: "ext", Mode: ModeReg | 0o644, Nlink: 1, Size: 100000,
		Payload: "ab/cd", Digest: verity.Digest(bytes.Repeat([]byte{1}, 32))})
	root.AddChild(&Node{Name: "link", Mode: ModeSymlink | 0o777, Nlink: 1, Payload: "target", Size: 6})
	return root
}

var corruptions = []corruption{
	{"bad-composefs-magic", ErrBadMagic, "composefs header magic", func(t testing.TB, m *imageMap) []byte {
		put32(m.data, hdrMagic, 0x12345678)
		return m.data
	}},
	{"bad-erofs-magic", ErrBadMagic, "EROFS superblock magic", func(t testing.TB, m *imageMap) []byte {
		put32(m.data, SuperblockOffset+sbMagic, 0)
		return m.data
	}},
	{"header-version", ErrUnsupported, "header version 2", func(t testing.TB, m *imageMap) []byte {
		put32(m.data, hdrVersion, 2)
		return m.data
	}},
	{"composefs-version", ErrUnsupported, "composefs_version 7", func(t testing.TB, m *imageMap) []byte {
		put32(m.data, hdrComposefsVersion, 7)
		return m.data
	}},
	{"blkszbits", ErrUnsupported, "blkszbits 13", func(t testing.TB, m *imageMap) []byte {
		m.data[SuperblockOffset+sbBlkszbits] = 13
		return m.data
	}},
	{"incompat-compression", ErrUnsupported, "unsupported feature: feature_incompat 0x1", func(t testing.TB, m *imageMap) []byte {
		put32(m.data, SuperblockOffset+sbFeatureIncompat, 1)
		return m.data
	}},
	{"truncated", ErrTruncated, "image is truncated: superblock says 4 blocks (16384 bytes), image has 12288 bytes", func(t testing.TB, m *imageMap) []byte {
		return m.data[:len(m.data)-BlockSize]
	}},
	{"truncated-header", ErrTruncated, "too short for the composefs header", func(t testing.TB, m *imageMap) []byte {
		return m.data[:20]
	}},
	{"truncated-superblock", ErrTruncated, "too short for the EROFS superblock", func(t testing.TB, m *imageMap) []byte {
		return m.data[:1100]
	}},
	{"root-nid-outside", ErrCorrupt, "root_nid 65535", func(t testing.TB, m *imageMap) []byte {
		put16(m.data, SuperblockOffset+sbRootNid, 0xffff)
		return m.data
	}},
	{"root-nid-superblock", ErrCorrupt, "root_nid 33", func(t testing.TB, m *imageMap) []byte {
		put16(m.data, SuperblockOffset+sbRootNid, 33)
		return m.data
	}},
	{"root-not-dir", ErrCorrupt, "root inode is not a directory", func(t testing.TB, m *imageMap) []byte {
		put16(m.data, SuperblockOffset+sbRootNid, uint16(m.nid(t, "/ext")))
		return m.data
	}},
	{"xattr-blkaddr", ErrCorrupt, "xattr_blkaddr", func(t testing.TB, m *imageMap) []byte {
		put32(m.data, SuperblockOffset+sbXattrBlkaddr, 1000)
		return m.data
	}},
	{"dirent-nid-outside", ErrCorrupt, `entry "ext" points at nid 1099511627776 outside the image`, func(t testing.TB, m *imageMap) []byte {
		put64(m.data, m.dirent(t, m.root, "ext"), 1<<40)
		return m.data
	}},
	{"dirent-nameoff-order", ErrCorrupt, "name offset", func(t testing.TB, m *imageMap) []byte {
		d := m.dirent(t, m.root, "ext")
		put16(m.data, d+direntSize+8, le.Uint16(m.data[d+8:])-1)
		return m.data
	}},
	{"dirent-unsorted", ErrCorrupt, "is not sorted after", func(t testing.TB, m *imageMap) []byte {
		// "ext" -> "Zxt", which sorts before the stub "ef" in front of it.
		m.data[m.nameOff(t, m.root, "ext")] = 'Z'
		return m.data
	}},
	{"dirent-ftype", ErrCorrupt, "has file type 7", func(t testing.TB, m *imageMap) []byte {
		m.data[m.dirent(t, m.root, "ext")+10] = FileTypeSymlink
		return m.data
	}},
	{"dot-not-self", ErrCorrupt, `"." points at`, func(t testing.TB, m *imageMap) []byte {
		a := m.nid(t, "/a")
		d := m.dirent(t, a, "b") - direntSize*2 // entries: . .. b
		put64(m.data, d, m.root)
		return m.data
	}},
	{"loop-to-ancestor", ErrLoop, "directory loop/hardlinked directory at nid 36", func(t testing.TB, m *imageMap) []byte {
		b := m.nid(t, "/a/b")
		d := m.dirent(t, b, "g")
		put64(m.data, d, m.root)
		m.data[d+10] = FileTypeDir
		return m.data
	}},
	{"hardlinked-dir", ErrLoop, "hardlinked directory", func(t testing.TB, m *imageMap) []byte {
		d := m.dirent(t, m.root, "link")
		put64(m.data, d, m.nid(t, "/a/b"))
		m.data[d+10] = FileTypeDir
		return m.data
	}},
	{"xattr-past-inode", ErrCorrupt, "xattr entry runs past end of inode", func(t testing.TB, m *imageMap) []byte {
		put16(m.data, m.xattrOff(t, "/a/b/f")+2, 200)
		return m.data
	}},
	{"xattr-long-prefix", ErrUnsupported, "long name prefix", func(t testing.TB, m *imageMap) []byte {
		m.data[m.xattrOff(t, "/a/b/f")+1] = 0x81
		return m.data
	}},
	{"xattr-unknown-index", ErrUnsupported, "unknown xattr name index 9", func(t testing.TB, m *imageMap) []byte {
		m.data[m.xattrOff(t, "/a/b/f")+1] = 9
		return m.data
	}},
	{"xattr-icount-huge", ErrCorrupt, "xattr", func(t testing.TB, m *imageMap) []byte {
		put16(m.data, m.inodeOff(t, "/a/b/f")+inoXattrIcount, 0xffff)
		return m.data
	}},
	{"symlink-empty", ErrCorrupt, "symlink target length 0", func(t testing.TB, m *imageMap) []byte {
		put32(m.data, m.inodeOff(t, "/link")+cinoSize, 0)
		return m.data
	}},
	{"symlink-nul", ErrCorrupt, "NUL", func(t testing.TB, m *imageMap) []byte {
		off := m.inodeOff(t, "/link")
		m.data[off+compactInodeSize+2] = 0
		return m.data
	}},
	{"layout-compressed", ErrUnsupported, "compressed data layout 1", func(t testing.TB, m *imageMap) []byte {
		off := m.inodeOff(t, "/a/b/f")
		put16(m.data, off, le.Uint16(m.data[off:])&^0xe|1<<1)
		return m.data
	}},
	{"layout-unknown", ErrUnsupported, "unknown data layout 6", func(t testing.TB, m *imageMap) []byte {
		off := m.inodeOff(t, "/a/b/f")
		put16(m.data, off, le.Uint16(m.data[off:])&^0xe|6<<1)
		return m.data
	}},
	{"chunk-indexes", ErrUnsupported, "8-byte chunk indexes", func(t testing.TB, m *imageMap) []byte {
		off := m.inodeOff(t, "/ext")
		put16(m.data, off+inoU, le.Uint16(m.data[off+inoU:])|chunkFormatIndexes)
		return m.data
	}},
	{"metacopy-header", ErrCorrupt, "metacopy xattr header", func(t testing.TB, m *imageMap) []byte {
		off := m.xattrOff(t, "/ext")
		// Inline entries are metacopy then redirect; the value follows
		// the 4-byte header and the name suffix "overlay.metacopy".
		if m.data[off] != byte(len("overlay.metacopy")) {
			t.Fatalf("first xattr of /ext is not metacopy")
		}
		m.data[off+4+uint64(m.data[off])] = 1
		return m.data
	}},
	{"bad-mode", ErrCorrupt, "invalid file mode", func(t testing.TB, m *imageMap) []byte {
		put16(m.data, m.inodeOff(t, "/a/b/g")+inoMode, 0o644)
		return m.data
	}},
	{"content-blocks-outside", ErrCorrupt, "are outside the image", func(t testing.TB, m *imageMap) []byte {
		off := m.inodeOff(t, "/a")
		put32(m.data, off+inoU, 1<<20) // /a's directory block
		put16(m.data, off, le.Uint16(m.data[off:])&^0xe)
		put32(m.data, off+cinoSize, BlockSize)
		return m.data
	}},
}

func TestReadCorrupt(t *testing.T) {
	base := mustWrite(t, corruptTree(t), DefaultWriteOptions)
	mustRead(t, base)
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			data := c.apply(t, newImageMap(t, bytes.Clone(base)))
			im, err := ReadImage(data)
			if err == nil {
				t.Fatalf("accepted: %+v", im.Root)
			}
			if !errors.Is(err, c.kind) {
				t.Errorf("error %v is not %v", err, c.kind)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a *FormatError", err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not mention %q", err, c.msg)
			}
			if *updateCorrupt {
				var buf bytes.Buffer
				zw := gzip.NewWriter(&buf)
				zw.Write(data)
				zw.Close()
				p := filepath.Join("testdata", "corrupt", c.name+".img.gz")
				if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestReadCorruptFiles reads the stored broken images (gzipped). The kind
// each must give is that of the case of the same name in corruptions; the
// files keep the cases honest if the writer's output ever changes.
func TestReadCorruptFiles(t *testing.T) {
	cases := map[string]corruption{}
	for _, c := range corruptions {
		cases[c.name] = c
	}
	paths, _ := filepath.Glob(filepath.Join("testdata", "corrupt", "*.img.gz"))
	if len(paths) == 0 {
		t.Fatal("no stored corrupt images; run go test -run TestReadCorrupt -update-corrupt")
	}
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".img.gz")
		c, ok := cases[name]
		if !ok {
			t.Errorf("%s: no case called %s", p, name)
			continue
		}
		data, err := conformance.ReadMaybeGzip(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ReadImage(data)
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %v mentioning %q", p, err, c.kind, c.msg)
		}
	}
}

// TestReadErrorMessage checks that an error names the inode, its path and
// the offset.
func TestReadErrorMessage(t *testing.T) {
	base := mustWrite(t, corruptTree(t), DefaultWriteOptions)
	m := newImageMap(t, bytes.Clone(base))
	nid := m.nid(t, "/a/b/f")
	put16(m.data, m.xattrOff(t, "/a/b/f")+2, 200)
	_, err := ReadImage(m.data)
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("%v", err)
	}
	if fe.Nid != nid || fe.Path != "/a/b/f" || fe.Offset != int64(m.xattrOff(t, "/a/b/f")) {
		t.Errorf("error fields %+v", fe)
	}
	want := fmt.Sprintf("image: inode %d (/a/b/f) at offset %#x: xattr entry runs past end of inode", nid, fe.Offset)
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("message %q\nwant prefix %q", err, want)
	}
}

// TestReadBombs builds images whose structures are shared many times over
// and checks the reader refuses or bounds them.
func TestReadBombs(t *testing.T) {
	t.Run("deep", func(t *testing.T) {
		root := NewDirectory("", 0o755)
		d := root
		for i := 0; i < maxReadDepth+1; i++ {
			c := NewDirectory("d", 0o755)
			d.AddChild(c)
			d = c
		}
		_, err := ReadImage(mustWrite(t, root, DefaultWriteOptions))
		if !errors.Is(err, ErrLimit) {
			t.Fatalf("depth %d: %v", maxReadDepth+1, err)
		}
	})
	t.Run("shared-dir-blocks", func(t *testing.T) {
		// 300 directories whose data all point at the root's block: the
		// "." check refuses the second one, so directories cannot share
		// the block that starts them.
		root := NewDirectory("", 0o755)
		for i := 0; i < 300; i++ {
			root.AddChild(NewDirectory(fmt.Sprintf("d%03d", i), 0o755))
		}
		data := mustWrite(t, root, DefaultWriteOptions)
		m := newImageMap(t, data)
		rootIno, _ := m.r().readInode(rdWhere{nid: m.root})
		for i := 0; i < 300; i++ {
			off := m.inodeOff(t, fmt.Sprintf("/d%03d", i))
			put16(data, off, 0) // plain layout
			put32(data, off+inoU, rootIno.iu)
			put32(data, off+cinoSize, BlockSize)
		}
		if _, err := ReadImage(data); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"."`) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("shared-content", func(t *testing.T) {
		// 3000 one-byte files, each patched to 5000 bytes of content in
		// the same block: 15 MB of content from a small image.
		root := NewDirectory("", 0o755)
		for i := 0; i < 3000; i++ {
			root.AddChild(&Node{Name: fmt.Sprintf("f%04d", i), Mode: ModeReg | 0o644, Nlink: 1, Content: []byte("x"), Size: 1})
		}
		data := mustWrite(t, root, DefaultWriteOptions)
		m := newImageMap(t, data)
		rootIno, ferr := m.r().readInode(rdWhere{nid: m.root})
		if ferr != nil {
			t.Fatal(ferr)
		}
		ents, ferr := m.r().readDir(rdWhere{nid: m.root}, rootIno, m.root)
		if ferr != nil {
			t.Fatal(ferr)
		}
		for _, e := range ents {
			if e.name[0] != 'f' {
				continue
			}
			off := e.nid * inodeSlotSize
			put16(data, off, 0)
			put32(data, off+inoU, 3)
			put32(data, off+cinoSize, MaxInlineContent)
		}
		if _, err := ReadImage(data); !errors.Is(err, ErrLimit) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("hardlink-fanout", func(t *testing.T) {
		// Many file entries pointing at one inode with a large inline
		// content: links must not copy the content.
		root := NewDirectory("", 0o755)
		f := &Node{Name: "f", Mode: ModeReg | 0o644, Nlink: 1, Content: bytes.Repeat([]byte{'x'}, 5000), Size: 5000}
		root.AddChild(f)
		for i := 0; i < 2000; i++ {
			root.AddChild(&Node{Name: fmt.Sprintf("l%04d", i), Mode: f.Mode, LinkTo: f})
		}
		im := mustRead(t, mustWrite(t, root, DefaultWriteOptions))
		if l := rdMust(Resolve(im.Root, "l0001")); l.LinkTo == nil {
			t.Fatal("not a link")
		}
	})
}

// BenchmarkReadImage reads the image of the largest upstream asset.
func BenchmarkReadImage(b *testing.B) {
	dump, err := conformance.ReadMaybeGzip(filepath.Join(conformance.Dir(b), "cs9-x86_64-developer.dump.gz"))
	if err != nil {
		b.Skip(err)
	}
	root, err := ParseDump(bytes.NewReader(dump), DumpOptions{})
	if err != nil {
		b.Fatal(err)
	}
	data := mustWrite(b, root, DefaultWriteOptions)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadImage(data); err != nil {
			b.Fatal(err)
		}
	}
}
