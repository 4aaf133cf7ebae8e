// Package fulltree builds the test tree with every kind of entry a
// composefs image must carry, for the tests that turn a directory into an
// image (the scanner, the kernel mount test, the repository's round
// trips) and compare the result with it: one tree, so that a case added
// here is checked everywhere.
//
// The tree: regular files of the sizes around the inline limit and the
// block size, empty and duplicate contents; hard links across directories
// (of big, small and empty files, a symlink and a fifo); a fifo, a socket,
// character and block devices (minor numbers beyond 16 bits), overlayfs
// whiteouts; symlinks (relative, absolute, dangling, to a directory, up to
// 4000 bytes); names with spaces, escapes, non-UTF-8 bytes and 255 bytes;
// xattrs in the user, trusted and security namespaces with binary values,
// shared xattrs, a trusted.overlay.* xattr of the tree's own and a POSIX
// ACL; setuid, setgid and sticky modes; owners beyond 16 and 32 bits;
// mtimes with nanoseconds, before 1970 and after 2106; a directory of
// 5000 entries, a deep path and an empty directory; optionally a 1 GiB
// sparse file.
package fulltree

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/treecmp"
	"golang.org/x/sys/unix"
)

// Options adjust the tree to what a test can carry.
type Options struct {
	// Sparse adds regular/sparse-1g, a 1 GiB file that is one hole.
	Sparse bool
	// ForTar leaves out what a tar archive cannot hold: the socket (tar
	// skips sockets), the fifo's second name (GNU tar records hard links
	// of regular files only) and the POSIX ACL (GNU tar keeps ACLs only
	// with --acls, as a record of its own).
	ForTar bool
	// Sizes adds a regular file of each of these sizes
	// (sizes/size-<n>).
	Sizes []int
}

// Tree describes the tree Build made, beyond what a walk of it shows.
type Tree struct {
	Dir string
	// Objects is the number of distinct contents of regular files larger
	// than InlineMax: the objects an image of the tree references.
	Objects int
	// Whiteouts are the relative paths of 0/0 character devices, which a
	// composefs image stores as escaped whiteouts.
	Whiteouts []string
	// Escaped maps relative paths to trusted.overlay.* xattrs set on them
	// in the tree, which the image escapes and overlayfs shows again.
	Escaped map[string]map[string]string
	// HasACL reports whether any entry has a POSIX ACL.
	HasACL bool
}

// InlineMax is the largest file mkcomposefs stores in the image.
const InlineMax = 64

// builder creates the tree, failing the test on any error.
type builder struct {
	t    testing.TB
	dir  string
	r    *rand.Rand
	tree *Tree
}

// Build makes the tree in dir (which must exist, and be empty). It needs
// root: devices, owners and trusted.* xattrs; without it the test is
// skipped. The tree is the same on every call with the same options.
func Build(t testing.TB, dir string, opts Options) *Tree {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the full test tree needs root (devices, owners, trusted.* xattrs)")
	}
	tree := &Tree{Dir: dir, Escaped: map[string]map[string]string{}}
	b := &builder{t: t, dir: dir, r: rand.New(rand.NewPCG(1, 2)), tree: tree}
	b.regular(opts)
	b.links(opts)
	b.special(opts)
	b.symlinks()
	b.names()
	b.xattrs(opts)
	b.modes()
	b.owners()
	b.shapes()
	b.setTimes()
	tree.Objects = countObjects(t, dir)
	return tree
}

func (b *builder) regular(opts Options) {
	// Sizes around the inline limit (64) and the block size.
	b.mkdir("sizes", 0o755)
	for _, n := range append([]int{0, 1, 64, 65, 4095, 4096, 4097, 1<<20 + 1}, opts.Sizes...) {
		b.file(fmt.Sprintf("sizes/size-%d", n), b.randBytes(n), 0o644)
	}
	// Identical files share one object; identical small files are both
	// inline; all-zero content.
	b.mkdir("dups", 0o755)
	dup := b.randBytes(200_000)
	b.file("dups/dup-a", dup, 0o644)
	b.file("dups/dup-b", dup, 0o640)
	small := []byte("same small content\n")
	b.file("dups/small-a", small, 0o644)
	b.file("dups/small-b", small, 0o644)
	b.file("dups/zeros-8k", make([]byte, 8192), 0o644)
	if opts.Sparse {
		f, err := os.Create(b.path("sizes/sparse-1g"))
		b.check(err, "create", "sizes/sparse-1g")
		b.check(f.Truncate(1<<30), "truncate", "sizes/sparse-1g")
		f.Close()
	}
}

func (b *builder) links(opts Options) {
	// Hard links: across directories, inline and external and empty,
	// three names, a symlink; the sorted-first name of hardlinks/ is in
	// another directory than the file was created in.
	b.mkdir("links", 0o755)
	b.mkdir("links/other", 0o755)
	b.file("links/hl-ext", b.randBytes(8192), 0o644)
	b.link("links/hl-ext", "links/other/hl-ext-2")
	b.file("links/hl-small", []byte("linked\n"), 0o600)
	b.link("links/hl-small", "links/hl-small-2")
	b.link("links/hl-small", "links/other/hl-small-3")
	b.file("links/hl-empty", nil, 0o644)
	b.link("links/hl-empty", "links/hl-empty-2")
	b.symlink("shared-target", "links/hl-sym")
	b.link("links/hl-sym", "links/hl-sym-2")
	b.mkdir("hardlinks", 0o755)
	b.mkdir("hardlinks/hl1", 0o755)
	b.mkdir("hardlinks/hl2", 0o755)
	b.file("hardlinks/hl2/a", b.randBytes(9000), 0o644)
	b.link("hardlinks/hl2/a", "hardlinks/hl1/x")
	b.link("hardlinks/hl2/a", "hardlinks/hl2/b")
}

func (b *builder) special(opts Options) {
	b.mkdir("special", 0o755)
	b.check(unix.Mkfifo(b.path("special/fifo"), 0o640), "mkfifo", "special/fifo")
	b.chmod("special/fifo", 0o640)
	b.mkdir("special/dir", 0o700)
	if !opts.ForTar {
		b.link("special/fifo", "special/dir/fifo-link")
	}
	b.mknod("special/null", unix.S_IFCHR|0o666, unix.Mkdev(1, 3))
	b.mknod("special/chr-big-minor", unix.S_IFCHR|0o620, unix.Mkdev(250, 70000))
	b.mknod("special/chr-bignum", unix.S_IFCHR|0o600, unix.Mkdev(4000, 1<<19))
	b.mknod("special/blk", unix.S_IFBLK|0o660, unix.Mkdev(7, 200))
	b.mknod("special/blk-zero", unix.S_IFBLK|0o600, unix.Mkdev(0, 0))
	if !opts.ForTar {
		b.mknod("special/sock", unix.S_IFSOCK|0o755, 0)
	}
	// An overlayfs whiteout: the image keeps it as an escaped whiteout
	// (and becomes format version 1).
	b.mkdir("whiteouts", 0o755)
	b.mknod("whiteouts/wh", unix.S_IFCHR|0o600, unix.Mkdev(0, 0))
	b.tree.Whiteouts = []string{"whiteouts/wh"}
}

func (b *builder) symlinks() {
	// Short, absolute, dangling, to a directory, and 1000 and 4000 bytes
	// (beyond inline).
	b.mkdir("symlinks", 0o755)
	b.symlink("../sizes/size-1", "symlinks/short")
	b.symlink("/etc/passwd", "symlinks/absolute")
	b.symlink("does/not/exist", "symlinks/dangling")
	b.symlink("../sizes", "symlinks/to-dir")
	b.symlink(strings.Repeat("long/", 800)[:4000], "symlinks/long-4000")
	b.symlink(strings.Repeat("x", 1000), "symlinks/long-1000")
	b.xattr("symlinks/short", "trusted.on-symlink", []byte("t"))
	b.xattr("symlinks/long-4000", "security.on-symlink", []byte("s\x00"))
}

func (b *builder) names() {
	// Spaces, non-ASCII UTF-8, bytes that are not UTF-8, escapes.
	b.mkdir("names", 0o755)
	for _, name := range []string{
		"a file with spaces", " leading space", "trailing space ",
		"caf\u00e9 \u65e5\u672c\u8a9e \U0001F600", "bad\xff\xfe\x80utf8", "\xc3\x28",
		`back\slash=equals`, "new\nline\ttab\rcr", "-dash", "--", "=", "\x01\x7f",
		strings.Repeat("n", 255), "00", "ff",
	} {
		b.file("names/"+name, []byte("name: "+name), 0o644)
	}
	b.mkdir("names/dir with spaces \xe9", 0o755)
	b.file("names/dir with spaces \xe9/inner", nil, 0o644)
}

func (b *builder) xattrs(opts Options) {
	// Several namespaces, binary values, an empty one, a big one, many on
	// one file, the same pair on many files (shared in the image).
	b.mkdir("xattrs", 0o755)
	b.file("xattrs/file", []byte("has xattrs"), 0o644)
	b.xattr("xattrs/file", "user.plain", []byte("value"))
	b.xattr("xattrs/file", "user.binary", []byte{0, 1, 2, 0xff, '=', ' ', '\n'})
	b.xattr("xattrs/file", "user.empty", nil)
	b.xattr("xattrs/file", "user.big", b.randBytes(3000))
	b.xattr("xattrs/file", "trusted.bin", []byte{0xde, 0xad, 0xbe, 0xef, 0})
	b.xattr("xattrs/file", "security.test", []byte("sec value"))
	b.xattr("xattrs/file", "user.name=with equals", []byte("eq"))
	b.xattr("xattrs", "user.on-dir", []byte("d"))
	b.xattr("xattrs", "trusted.on-dir", []byte("t"))
	b.file("xattrs/external", b.randBytes(300), 0o644)
	b.xattr("xattrs/external", "user.on-external", []byte("1"))
	b.file("xattrs/many", b.randBytes(100), 0o644)
	for i := range 40 {
		b.xattr("xattrs/many", fmt.Sprintf("user.many.%02d", i), []byte(fmt.Sprint(i)))
	}
	for i := range 10 {
		rel := fmt.Sprintf("xattrs/shared-%d", i)
		b.file(rel, []byte{byte(i)}, 0o644)
		b.xattr(rel, "user.shared", []byte("the same value on every file"))
		b.xattr(rel, "trusted.shared", []byte("also shared"))
	}
	// A trusted.overlay.* xattr of the tree's own: the image escapes it
	// and overlayfs shows it under its original name.
	b.file("xattrs/overlay-own", []byte("x"), 0o644)
	b.xattr("xattrs/overlay-own", "trusted.overlay.custom", []byte("mine"))
	b.tree.Escaped["xattrs/overlay-own"] = map[string]string{"trusted.overlay.custom": "mine"}
	if !opts.ForTar {
		// A POSIX ACL: the image is flagged as having ACLs.
		b.file("xattrs/acl", []byte("acl"), 0o640)
		b.xattr("xattrs/acl", "system.posix_acl_access", posixACL(1234))
		b.tree.HasACL = true
	}
}

func (b *builder) modes() {
	b.mkdir("modes", 0o755)
	b.file("modes/setuid", []byte("su"), 0o4755)
	b.file("modes/setgid", []byte("sg"), 0o2711)
	b.file("modes/private", []byte("0600"), 0o600)
	b.file("modes/none", []byte("0000"), 0)
	b.file("modes/all", []byte("07777"), 0o7777)
	b.mkdir("modes/sticky", 0o1777)
	b.file("modes/sticky/inside", nil, 0o644)
	b.mkdir("modes/setgid-dir", 0o2775)
	b.mkdir("modes/readonly-dir", 0o755)
	b.file("modes/readonly-dir/inside", nil, 0o644)
	b.chmod("modes/readonly-dir", 0o555)
}

func (b *builder) owners() {
	// Ids beyond 16 bits (extended inodes) and beyond 31.
	b.mkdir("owners", 0o755)
	for _, o := range []struct {
		name     string
		uid, gid int
	}{{"u1234-g5678", 1234, 5678}, {"u100000-g70000", 100000, 70000}, {"u65535-g65536", 65535, 65536}, {"u4000000000", 4000000000, 0}} {
		b.file("owners/"+o.name, []byte(o.name), 0o644)
		b.chown("owners/"+o.name, o.uid, o.gid)
	}
	b.symlink("target", "owners/symlink-1234")
	b.chown("owners/symlink-1234", 1234, 5678)
	b.mkdir("owners/dir-1234", 0o750)
	b.chown("owners/dir-1234", 1234, 5678)
}

func (b *builder) shapes() {
	// A directory of 5000 entries spans many directory blocks.
	b.mkdir("big", 0o755)
	for i := range 5000 {
		rel := fmt.Sprintf("big/entry-%05d-%s", i, strings.Repeat("x", i%40))
		if i%500 == 0 {
			b.mkdir(rel, 0o755)
			continue
		}
		var c []byte
		if i%7 == 0 {
			c = []byte(fmt.Sprint(i))
		}
		b.file(rel, c, 0o644)
	}
	// Depth and an empty directory.
	p := "deep"
	b.mkdir(p, 0o755)
	for _, c := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		p += "/" + c
		b.mkdir(p, 0o755)
	}
	b.file(p+"/bottom", []byte("bottom of the tree, long enough to be an external object......."), 0o644)
	b.mkdir("empty", 0o700)
	// A root entry named like one of the 256 whiteout stubs: the image
	// then has no stub of that name.
	b.file("0a", []byte("not a stub"), 0o644)
	b.mknod("fifo-at-root", unix.S_IFIFO|0o644, 0)

	b.xattr(".", "user.root", []byte("root xattr"))
	b.xattr(".", "trusted.root", []byte{0})
	b.chmod(".", 0o755)
}

func (b *builder) path(rel string) string { return filepath.Join(b.dir, rel) }

func (b *builder) check(err error, what string, rel string) {
	b.t.Helper()
	if err != nil {
		b.t.Fatalf("building the test tree: %s %q: %v", what, rel, err)
	}
}

func (b *builder) mkdir(rel string, perm uint32) {
	b.t.Helper()
	b.check(unix.Mkdir(b.path(rel), 0o755), "mkdir", rel)
	b.chmod(rel, perm)
}

func (b *builder) chmod(rel string, perm uint32) {
	b.t.Helper()
	// Not os.Chmod: it takes os.ModeSetuid, not 0o4000.
	b.check(unix.Fchmodat(unix.AT_FDCWD, b.path(rel), perm, 0), "chmod", rel)
}

func (b *builder) randBytes(n int) []byte {
	p := make([]byte, n+7)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], b.r.Uint64())
	}
	return p[:n]
}

func (b *builder) file(rel string, content []byte, perm uint32) {
	b.t.Helper()
	b.check(os.WriteFile(b.path(rel), content, 0o600), "write", rel)
	b.chmod(rel, perm)
}

func (b *builder) mknod(rel string, mode uint32, dev uint64) {
	b.t.Helper()
	b.check(unix.Mknod(b.path(rel), mode, int(dev)), "mknod", rel)
	b.chmod(rel, mode&0o7777)
}

func (b *builder) symlink(target, rel string) {
	b.t.Helper()
	b.check(unix.Symlink(target, b.path(rel)), "symlink", rel)
}

func (b *builder) link(old, rel string) {
	b.t.Helper()
	b.check(unix.Link(b.path(old), b.path(rel)), "link", rel)
}

func (b *builder) xattr(rel, key string, value []byte) {
	b.t.Helper()
	b.check(unix.Lsetxattr(b.path(rel), key, value, 0), "setxattr "+key, rel)
}

func (b *builder) chown(rel string, uid, gid int) {
	b.t.Helper()
	b.check(unix.Lchown(b.path(rel), uid, gid), "lchown", rel)
}

// posixACL encodes an access ACL in the kernel's xattr format: the owner,
// one named user, the owning group, the mask and others.
func posixACL(user uint32) []byte {
	const (
		tagUserObj  = 0x01
		tagUser     = 0x02
		tagGroupObj = 0x04
		tagMask     = 0x10
		tagOther    = 0x20
		undefinedID = 0xffffffff
	)
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 2) // version
	entry := func(tag, perm uint16, id uint32) {
		b = binary.LittleEndian.AppendUint16(b, tag)
		b = binary.LittleEndian.AppendUint16(b, perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	entry(tagUserObj, 6, undefinedID)
	entry(tagUser, 4, user)
	entry(tagGroupObj, 4, undefinedID)
	entry(tagMask, 4, undefinedID)
	entry(tagOther, 0, undefinedID)
	return b
}

// setTimes gives every entry an mtime with nanoseconds, children before
// their directory so that nothing disturbs a directory's time afterwards.
// A few entries get times before 1970 and after 2106 (beyond 32 bits).
func (b *builder) setTimes() {
	special := map[string]unix.Timespec{
		"symlinks/long-4000": {Sec: -12345, Nsec: 678_000_000},
		"sizes/size-0":       {Sec: -1, Nsec: 999_999_999},
		"sizes/size-1":       {Sec: 0, Nsec: 0},
		"sizes/size-64":      {Sec: 0, Nsec: 1},
		"modes/setuid":       {Sec: 5_000_000_000, Nsec: 1},
		"owners":             {Sec: 4_294_967_296, Nsec: 500},
		"dups/small-a":       {Sec: 4_102_444_800, Nsec: 999_999_999},
	}
	var walk func(rel string)
	walk = func(rel string) {
		p := b.path(rel)
		var st unix.Stat_t
		b.check(unix.Lstat(p, &st), "lstat", rel)
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			names, err := treecmp.ReadNames(p)
			b.check(err, "read directory", rel)
			for _, n := range names {
				walk(filepath.Join(rel, n))
			}
		}
		ts, ok := special[rel]
		if !ok {
			ts = unix.Timespec{Sec: 1_600_000_000 + b.r.Int64N(100_000_000), Nsec: b.r.Int64N(1_000_000_000)}
			if b.r.IntN(10) == 0 {
				ts.Nsec = 0
			}
		}
		times := []unix.Timespec{ts, ts}
		b.check(unix.UtimesNanoAt(unix.AT_FDCWD, p, times, unix.AT_SYMLINK_NOFOLLOW), "utimensat", rel)
	}
	walk(".")
}

// countObjects returns the number of distinct contents of the regular
// files larger than InlineMax under dir.
func countObjects(t testing.TB, dir string) int {
	t.Helper()
	seen := map[[32]byte]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		if n > InlineMax {
			seen[[32]byte(h.Sum(nil))] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(seen)
}
