package tarimport

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/objstore"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// entry is one member of a test archive. Body is the content of regular
// files.
type entry struct {
	hdr  tar.Header
	body []byte
}

func reg(name string, body []byte) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: body}
}

func dir(name string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

func link(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
}

func symlink(name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// archive writes entries as a PAX tar stream.
func archive(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.hdr
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if h.Format == tar.FormatUnknown {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("tar body %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func newStore(t *testing.T) *objstore.Store {
	t.Helper()
	st, err := objstore.Open(filepath.Join(t.TempDir(), "objects"), objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func importBytes(t *testing.T, st *objstore.Store, data []byte) (*Result, error) {
	t.Helper()
	return Import(bytes.NewReader(data), st, erofs.RecommendedInlineMax, nil)
}

func mustImport(t *testing.T, st *objstore.Store, data []byte) *Result {
	t.Helper()
	res, err := importBytes(t, st, data)
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	return res
}

func lookup(t *testing.T, root *erofs.Node, path string) *erofs.Node {
	t.Helper()
	n, err := erofs.Resolve(root, path)
	if err != nil {
		t.Fatalf("resolve %s: %v", path, err)
	}
	return n
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 7
	for i := range b {
		x = x*1103515245 + 12345
		b[i] = byte(x >> 23)
	}
	return b
}

// roundTrip writes the tree as an image and reads it back, which fails on
// a tree the writer cannot represent (dangling hard links, bad names).
func roundTrip(t *testing.T, root *erofs.Node) *erofs.Node {
	t.Helper()
	var b bytes.Buffer
	if err := erofs.Write(&b, root, erofs.DefaultWriteOptions); err != nil {
		t.Fatalf("writing the imported tree as an image: %v", err)
	}
	img, err := erofs.ReadImage(b.Bytes())
	if err != nil {
		t.Fatalf("reading the image back: %v", err)
	}
	return img.Root
}

// readContent returns a regular file's content: inline or from the store.
func readContent(t *testing.T, st *objstore.Store, n *erofs.Node) []byte {
	t.Helper()
	n = n.Target()
	if !n.IsExternal() {
		return n.Content
	}
	d := n.Digest
	if n.Payload != d.ObjectPath() {
		t.Fatalf("%s: payload %q does not match digest %s", n.Path(), n.Payload, d)
	}
	data, err := os.ReadFile(st.Path(d))
	if err != nil {
		t.Fatalf("%s: object: %v", n.Path(), err)
	}
	if got := verity.DigestBytes(data); got != d {
		t.Fatalf("%s: object content digest %s, name says %s", n.Path(), got, d)
	}
	return data
}

func TestImportAllTypes(t *testing.T) {
	st := newStore(t)
	longName := "dir/" + strings.Repeat("long-name-", 14) + "end" // > 100 bytes
	mtime := time.Unix(1600000000, 123456789)
	big := pattern(4097, 1)
	xattrFile := reg("x", []byte("with xattrs"))
	xattrFile.hdr.PAXRecords = map[string]string{
		"SCHILY.xattr.user.plain":       "value",
		"SCHILY.xattr.trusted.bin":      "\x00\x01\xff",
		"SCHILY.xattr.security.selinux": "system_u:object_r:etc_t:s0",
		// GNU tar escapes '=' and '%' in names (and nothing else).
		"SCHILY.xattr.user.a%3Db%25c%41": "gnu-escaped",
		// libarchive's spelling: URL-escaped name, base64 value.
		"LIBARCHIVE.xattr.user.with%20space": "aGVsbG8=",
	}
	owned := reg("owned", []byte("o"))
	owned.hdr.Uid, owned.hdr.Gid = 100000, 200000
	owned.hdr.Mode = 0o4755
	owned.hdr.ModTime = mtime
	chr := entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}}
	blk := entry{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/sda", Mode: 0o660, Devmajor: 8, Devminor: 0, Gid: 6}}
	fifo := entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o600}}

	data := archive(t,
		dir("./"),
		dir("dir"),
		reg("empty", nil),
		reg("one", []byte("1")),
		reg("sixty-four", pattern(64, 2)),
		reg("sixty-five", pattern(65, 3)),
		reg("big", big),
		reg("big-again", big), // same content: one object
		reg(longName, []byte("long")),
		symlink("abs", "/usr/lib/os-release"),
		symlink("rel", "../x/y"),
		link("hard", "big"),
		link("./hard2", "/big"), // absolute and ./ spellings name the same entry
		xattrFile, owned, chr, blk, fifo,
	)
	res := mustImport(t, st, data)
	root := res.Root

	if res.Entries != 18 {
		t.Errorf("Entries = %d, want 18", res.Entries)
	}
	if res.NewObjects != 2 { // sixty-five and big
		t.Errorf("NewObjects = %d, want 2", res.NewObjects)
	}
	for name, want := range map[string][]byte{
		"empty": {}, "one": []byte("1"), "sixty-four": pattern(64, 2), "sixty-five": pattern(65, 3),
		"big": big, "big-again": big, longName: []byte("long"),
	} {
		n := lookup(t, root, name)
		if !n.IsRegular() || n.Size != uint64(len(want)) {
			t.Errorf("%s: mode %o size %d, want a regular file of %d bytes", name, n.Mode, n.Size, len(want))
			continue
		}
		if got := readContent(t, st, n); !bytes.Equal(got, want) && len(want) > 0 {
			t.Errorf("%s: content differs", name)
		}
		if external := n.IsExternal(); external != (len(want) > erofs.RecommendedInlineMax) {
			t.Errorf("%s (%d bytes): external = %v", name, len(want), external)
		}
	}
	if a, b := lookup(t, root, "big"), lookup(t, root, "big-again"); a.Digest != b.Digest {
		t.Error("equal contents got different digests")
	}
	if n := lookup(t, root, "abs"); !n.IsSymlink() || n.Payload != "/usr/lib/os-release" {
		t.Errorf("absolute symlink: mode %o target %q", n.Mode, n.Payload)
	}
	if n := lookup(t, root, "rel"); n.Payload != "../x/y" {
		t.Errorf("relative symlink target %q (symlink targets are stored as they are)", n.Payload)
	}
	bigNode := lookup(t, root, "big")
	for _, h := range []string{"hard", "hard2"} {
		if n := lookup(t, root, h); n.LinkTo != bigNode {
			t.Errorf("%s: not a hard link of /big (LinkTo %v)", h, n.LinkTo)
		}
	}
	if bigNode.Nlink != 3 {
		t.Errorf("/big nlink %d, want 3", bigNode.Nlink)
	}
	x := lookup(t, root, "x")
	wantX := map[string]string{"user.plain": "value", "trusted.bin": "\x00\x01\xff",
		"security.selinux": "system_u:object_r:etc_t:s0", "user.with space": "hello",
		"user.a=b%c%41": "gnu-escaped"}
	if len(x.Xattrs) != len(wantX) {
		t.Errorf("xattrs %q, want %q", x.Xattrs, wantX)
	}
	for k, v := range wantX {
		if got, ok := x.GetXattr(k); !ok || got != v {
			t.Errorf("xattr %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	o := lookup(t, root, "owned")
	if o.UID != 100000 || o.GID != 200000 || o.Mode != erofs.ModeReg|0o4755 {
		t.Errorf("owned: uid %d gid %d mode %o", o.UID, o.GID, o.Mode)
	}
	if o.Mtime != (erofs.Timespec{Sec: 1600000000, Nsec: 123456789}) {
		t.Errorf("owned: mtime %+v, want nanoseconds kept", o.Mtime)
	}
	if n := lookup(t, root, "dev/null"); n.Type() != erofs.ModeChr || n.Rdev != unix.Mkdev(1, 3) || n.Mode&0o7777 != 0o666 {
		t.Errorf("dev/null: mode %o rdev %#x", n.Mode, n.Rdev)
	}
	if n := lookup(t, root, "dev/sda"); n.Type() != erofs.ModeBlk || n.Rdev != unix.Mkdev(8, 0) || n.GID != 6 {
		t.Errorf("dev/sda: mode %o rdev %#x gid %d", n.Mode, n.Rdev, n.GID)
	}
	if n := lookup(t, root, "dev/fifo"); n.Type() != erofs.ModeFifo {
		t.Errorf("dev/fifo: mode %o", n.Mode)
	}
	// dev/ had no entry of its own: it is made with mode 0755.
	if n := lookup(t, root, "dev"); !n.IsDir() || n.Mode&0o7777 != 0o755 {
		t.Errorf("implicit parent dev: mode %o", n.Mode)
	}

	// The tree is one the image writer accepts, and reads back the same.
	back := roundTrip(t, root)
	if n := lookup(t, back, longName); n.Size != 4 {
		t.Errorf("long name after image round trip: size %d", n.Size)
	}
	if n := lookup(t, back, "hard"); n.Target() != lookup(t, back, "big").Target() {
		t.Error("hard link lost in the image")
	}
}

func TestImportPathSpellings(t *testing.T) {
	st := newStore(t)
	res := mustImport(t, st, archive(t,
		reg("a", []byte("first")),
		reg("./a", []byte("second")),
		reg("/a", []byte("third")),
		reg("b//c/./d", []byte("deep")),
	))
	if got := readContent(t, st, lookup(t, res.Root, "a")); string(got) != "third" {
		t.Errorf("a = %q: a later entry for the same path must replace the earlier one", got)
	}
	if len(res.Root.Children) != 2 {
		t.Errorf("root has %d entries, want 2 (a, b)", len(res.Root.Children))
	}
	if got := readContent(t, st, lookup(t, res.Root, "b/c/d")); string(got) != "deep" {
		t.Errorf("b/c/d = %q", got)
	}
}

func TestImportDirectoryEntryKeepsChildren(t *testing.T) {
	st := newStore(t)
	d := dir("d")
	d.hdr.Mode = 0o700
	d.hdr.Uid = 5
	res := mustImport(t, st, archive(t, reg("d/f", []byte("f")), d))
	n := lookup(t, res.Root, "d")
	if n.Mode&0o7777 != 0o700 || n.UID != 5 {
		t.Errorf("d: mode %o uid %d: a later directory entry must set the metadata", n.Mode, n.UID)
	}
	if n.Lookup("f") == nil {
		t.Error("d/f lost when the directory's own entry came after it")
	}
}

func TestImportRefusesEscapes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
		want    string // in the error
	}{
		{"dotdot", []entry{reg("../evil", []byte("x"))}, `"../evil"`},
		{"inner dotdot", []entry{dir("a"), reg("a/../../evil", []byte("x"))}, `"a/../../evil"`},
		{"dotdot dir", []entry{dir("x/../..")}, `"x/../.."`},
		{"hard link target", []entry{link("h", "../../etc/shadow")}, `"../../etc/shadow"`},
		{"hard link inner target", []entry{reg("f", []byte("x")), link("h", "a/../../f")}, `"a/../../f"`},
		{"symlink name", []entry{symlink("../l", "/")}, `"../l"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := importBytes(t, newStore(t), archive(t, tc.entries...))
			if err == nil {
				t.Fatal("Import accepted a path that leaves the root")
			}
			if !errors.Is(err, ErrEscapes) {
				t.Errorf("error %q does not wrap ErrEscapes", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "escapes") {
				t.Errorf("error %q should name %s and say it escapes the root", err, tc.want)
			}
		})
	}
}

func TestImportBadLinks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
		want    string
	}{
		{"missing target", []entry{link("h", "nowhere")}, "nowhere"},
		{"directory target", []entry{dir("d"), link("h", "d")}, "directory"},
		{"absolute outside", []entry{link("h", "/etc/passwd")}, "/etc/passwd"},
		{"through a symlink", []entry{dir("d"), reg("d/f", []byte("x")), symlink("l", "d"), link("h", "l/f")}, "l/f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := importBytes(t, newStore(t), archive(t, tc.entries...))
			if err == nil {
				t.Fatal("Import accepted a bad hard link")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "hard link") {
				t.Errorf("error %q should say hard link and name %q", err, tc.want)
			}
		})
	}
}

func TestImportRefusesThroughSymlink(t *testing.T) {
	// Extracting "l/f" with l -> /etc would write outside the root.
	_, err := importBytes(t, newStore(t), archive(t, symlink("l", "/etc"), reg("l/passwd", []byte("x"))))
	if err == nil {
		t.Fatal("Import put a file below a symlink")
	}
	if !errors.Is(err, erofs.ErrNotDirectory) {
		t.Errorf("error %q, want not a directory", err)
	}
}

func TestImportRootMustBeDirectory(t *testing.T) {
	_, err := importBytes(t, newStore(t), archive(t, reg(".", []byte("x"))))
	if err == nil || !strings.Contains(err.Error(), "root") {
		t.Fatalf("error %v, want the root must be a directory", err)
	}
}

func TestImportRootMetadata(t *testing.T) {
	d := dir(".")
	d.hdr.Mode = 0o750
	d.hdr.Uid = 7
	d.hdr.ModTime = time.Unix(1234, 5)
	res := mustImport(t, newStore(t), archive(t, d))
	r := res.Root
	if r.Mode != erofs.ModeDir|0o750 || r.UID != 7 || r.Mtime != (erofs.Timespec{Sec: 1234, Nsec: 5}) {
		t.Errorf("root: mode %o uid %d mtime %+v", r.Mode, r.UID, r.Mtime)
	}
}

func TestImportTruncated(t *testing.T) {
	big := pattern(100000, 4)
	full := archive(t, dir("d"), reg("d/small", []byte("small")), reg("d/big", big), reg("d/after", []byte("after")))
	// Cut in the middle of the big file's content, in the middle of a
	// header, and just before the end-of-archive blocks.
	bigAt := bytes.Index(full, big[:512])
	if bigAt < 0 {
		t.Fatal("content not found in archive")
	}
	for _, cut := range []int{bigAt + 1000, bigAt - 300, 700, len(full) - 1024 - 512 - 100} {
		_, err := importBytes(t, newStore(t), full[:cut])
		if err == nil {
			t.Errorf("Import of the archive cut at %d of %d bytes succeeded", cut, len(full))
			continue
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) && !strings.Contains(err.Error(), "header says") {
			t.Logf("cut at %d: %v", cut, err)
		}
	}
	// Complete archive: fine.
	mustImport(t, newStore(t), full)
}

func TestImportLeavesNoTemporaryFiles(t *testing.T) {
	st := newStore(t)
	full := archive(t, reg("big", pattern(200000, 5)), reg("big2", pattern(70000, 6)))
	if _, err := importBytes(t, st, full[:150000]); err == nil {
		t.Fatal("truncated archive accepted")
	}
	mustImport(t, st, full)
	ents, err := os.ReadDir(st.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			t.Errorf("left in the store: %s", e.Name())
		}
	}
}

func TestImportReplacedHardLinkTarget(t *testing.T) {
	// tar keeps the first content for the link when the target's path is
	// later replaced: the link is another name of the old inode.
	st := newStore(t)
	old := pattern(1000, 7)
	res := mustImport(t, st, archive(t,
		reg("a", old),
		link("b", "a"),
		link("c", "a"),
		reg("a", []byte("new")),
	))
	root := roundTrip(t, res.Root)
	a, b, c := lookup(t, root, "a"), lookup(t, root, "b"), lookup(t, root, "c")
	if got := readContent(t, st, a); string(got) != "new" {
		t.Errorf("a = %q, want the new content", got)
	}
	if got := readContent(t, st, b); !bytes.Equal(got, old) {
		t.Errorf("b: %d bytes, want the old content of a", len(got))
	}
	if b.Target() != c.Target() {
		t.Error("b and c are no longer the same inode")
	}
	if n := b.Target().Nlink; n != 2 {
		t.Errorf("b/c nlink %d, want 2", n)
	}
	if n := a.Target().Nlink; n != 1 {
		t.Errorf("a nlink %d, want 1", n)
	}
}

func TestImportReplacedHardLink(t *testing.T) {
	// A link replaced by a plain file no longer counts towards nlink.
	st := newStore(t)
	res := mustImport(t, st, archive(t,
		reg("a", []byte("a")),
		link("b", "a"),
		reg("b", []byte("b")),
	))
	if n := lookup(t, res.Root, "a").Nlink; n != 1 {
		t.Errorf("a nlink %d, want 1 after its link was replaced", n)
	}
}

func TestImportReplacedDirectoryWithLinks(t *testing.T) {
	st := newStore(t)
	res := mustImport(t, st, archive(t,
		dir("d"),
		reg("d/f", pattern(300, 8)),
		link("keep", "d/f"),
		reg("d", []byte("now a file")),
	))
	root := roundTrip(t, res.Root)
	if got := readContent(t, st, lookup(t, root, "keep")); !bytes.Equal(got, pattern(300, 8)) {
		t.Error("keep lost the content of the removed d/f")
	}
	if n := lookup(t, root, "d"); !n.IsRegular() {
		t.Errorf("d: mode %o, want a regular file", n.Mode)
	}
}

func TestImportBadSymlink(t *testing.T) {
	_, err := importBytes(t, newStore(t), archive(t, symlink("l", strings.Repeat("x/", 3000))))
	if !errors.Is(err, erofs.ErrBadSymlink) {
		t.Errorf("over-long symlink target: %v", err)
	}
}

func TestImportUnsupportedType(t *testing.T) {
	e := entry{hdr: tar.Header{Typeflag: 'Z', Name: "odd", Mode: 0o644}}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&e.hdr); err != nil {
		t.Skipf("archive/tar will not write type Z: %v", err)
	}
	tw.Close()
	if _, err := importBytes(t, newStore(t), b.Bytes()); err == nil || !strings.Contains(err.Error(), "odd") {
		t.Errorf("unsupported entry: %v", err)
	}
}

func TestImportProgress(t *testing.T) {
	var calls, lastFiles, lastBytes int64
	_, err := Import(bytes.NewReader(archive(t, reg("a", pattern(100, 1)), reg("b", pattern(200, 2)), dir("c"))),
		newStore(t), erofs.RecommendedInlineMax, func(files, bytes int64) {
			calls++
			lastFiles, lastBytes = files, bytes
		})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 3 || lastFiles != 3 || lastBytes != 300 {
		t.Errorf("progress: %d calls, last (%d files, %d bytes), want 3 calls ending at (3, 300)", calls, lastFiles, lastBytes)
	}
}

func TestImportLargeUID(t *testing.T) {
	// Owners beyond the 7-digit octal ustar field go to PAX records.
	f := reg("f", []byte("x"))
	f.hdr.Uid, f.hdr.Gid = 4000000000, 3000000000
	res := mustImport(t, newStore(t), archive(t, f))
	n := lookup(t, res.Root, "f")
	if n.UID != 4000000000 || n.GID != 3000000000 {
		t.Errorf("uid %d gid %d", n.UID, n.GID)
	}
}

func TestImportGNUFormatLongNames(t *testing.T) {
	long := strings.Repeat("d/", 60) + "file"
	e := reg(long, []byte("gnu"))
	e.hdr.Format = tar.FormatGNU
	l := link("short", long)
	l.hdr.Format = tar.FormatGNU
	res := mustImport(t, newStore(t), archive(t, e, l))
	if n := lookup(t, res.Root, "short"); n.LinkTo == nil || n.LinkTo.Path() != "/"+long {
		t.Errorf("GNU long link: %+v", n)
	}
}

func TestImportSymlinkMode(t *testing.T) {
	l := symlink("l", "/x")
	l.hdr.Mode = 0
	res := mustImport(t, newStore(t), archive(t, l))
	if n := lookup(t, res.Root, "l"); n.Mode != erofs.ModeSymlink|0o777 {
		t.Errorf("symlink mode %o, want 0777 as on any Linux filesystem", n.Mode)
	}
}

// TestXattrBothSpellingsOnce: an attribute given in both the GNU and the
// libarchive spelling is recorded once, with GNU's value, whatever order
// the PAX record map yields.
func TestXattrBothSpellingsOnce(t *testing.T) {
	hdr := &tar.Header{PAXRecords: map[string]string{
		"SCHILY.xattr.user.a":     "gnu",
		"LIBARCHIVE.xattr.user.a": base64.StdEncoding.EncodeToString([]byte("libarchive")),
		"LIBARCHIVE.xattr.user.b": base64.StdEncoding.EncodeToString([]byte("only-la")),
	}}
	for range 50 { // map iteration order varies between runs
		got := xattrsOf(hdr)
		want := []erofs.Xattr{{Key: "user.a", Value: "gnu"}, {Key: "user.b", Value: "only-la"}}
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("xattrs %v, want %v", got, want)
		}
	}
}
