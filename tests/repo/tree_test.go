package repo

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// maker builds source trees, failing the test on any error.
type maker struct {
	t    *testing.T
	root string
	r    *rand.Rand
	// times to set last, deepest first: directories get their mtime after
	// their entries are made.
	times []timed
}

type timed struct {
	rel  string
	sec  int64
	nsec int64
}

func newMaker(t *testing.T, root string, seed uint64) *maker {
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return &maker{t: t, root: root, r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (m *maker) p(rel string) string { return filepath.Join(m.root, rel) }

func (m *maker) check(err error, what, rel string) {
	m.t.Helper()
	if err != nil {
		m.t.Fatalf("making the source: %s %q: %v", what, rel, err)
	}
}

func (m *maker) bytes(n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := m.r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func (m *maker) dir(rel string, perm uint32) {
	m.t.Helper()
	m.check(os.MkdirAll(filepath.Dir(m.p(rel)), 0o755), "mkdir parents", rel)
	m.check(unix.Mkdir(m.p(rel), 0o755), "mkdir", rel)
	m.chmod(rel, perm)
}

func (m *maker) chmod(rel string, perm uint32) {
	m.t.Helper()
	m.check(unix.Fchmodat(unix.AT_FDCWD, m.p(rel), perm, 0), "chmod", rel)
}

func (m *maker) file(rel string, content []byte, perm uint32) {
	m.t.Helper()
	m.check(os.MkdirAll(filepath.Dir(m.p(rel)), 0o755), "mkdir parents", rel)
	m.check(os.WriteFile(m.p(rel), content, 0o600), "write", rel)
	m.chmod(rel, perm)
}

func (m *maker) symlink(rel, target string) {
	m.t.Helper()
	m.check(os.Symlink(target, m.p(rel)), "symlink", rel)
}

func (m *maker) link(rel, existing string) {
	m.t.Helper()
	m.check(unix.Linkat(unix.AT_FDCWD, m.p(existing), unix.AT_FDCWD, m.p(rel), 0), "link", rel)
}

func (m *maker) mknod(rel string, mode uint32, major, minor uint32) {
	m.t.Helper()
	m.check(unix.Mknod(m.p(rel), mode, int(unix.Mkdev(major, minor))), "mknod", rel)
	m.chmod(rel, mode&0o7777)
}

func (m *maker) chown(rel string, uid, gid int) {
	m.t.Helper()
	m.check(unix.Lchown(m.p(rel), uid, gid), "chown", rel)
}

func (m *maker) xattr(rel, key string, value []byte) {
	m.t.Helper()
	m.check(unix.Lsetxattr(m.p(rel), key, value, 0), "setxattr "+key, rel)
}

// mtime records a time to give rel once the tree is complete.
func (m *maker) mtime(rel string, sec, nsec int64) {
	m.times = append(m.times, timed{rel, sec, nsec})
}

// finish gives every entry its recorded mtime, or else a distinct one
// with nanoseconds, directories after their contents.
func (m *maker) finish() {
	m.t.Helper()
	set := map[string]timed{}
	for _, x := range m.times {
		set[x.rel] = x
	}
	var all []string
	filepath.Walk(m.root, func(p string, fi os.FileInfo, err error) error {
		m.check(err, "walk", p)
		rel, _ := filepath.Rel(m.root, p)
		all = append(all, rel)
		return nil
	})
	// Deepest first, so a directory's time is set after its entries'.
	sort.SliceStable(all, func(i, j int) bool {
		return strings.Count(all[i], "/") > strings.Count(all[j], "/") ||
			strings.Count(all[i], "/") == strings.Count(all[j], "/") && all[i] > all[j]
	})
	for i, rel := range all {
		x, ok := set[rel]
		if !ok {
			x = timed{rel, 1600000000 + int64(i)*3607, int64(i*7919+13) % 1000000000}
		}
		ts := []unix.Timespec{{Sec: x.sec, Nsec: x.nsec}, {Sec: x.sec, Nsec: x.nsec}}
		m.check(unix.UtimesNanoAt(unix.AT_FDCWD, m.p(rel), ts, unix.AT_SYMLINK_NOFOLLOW), "utimes", rel)
	}
}

// makeFullTree makes a tree with every kind of entry the repository must
// keep: regular files of the sizes around the inline limit and the 4 KiB
// block, a 1 GiB sparse file, empty files, symlinks, a fifo, devices, hard
// links (of big, small and empty files and of a symlink), xattrs in the
// user, trusted and security namespaces, owners beyond 65535, special mode
// bits and mtimes with nanoseconds.
func makeFullTree(t *testing.T, root string, withSparse bool) {
	t.Helper()
	m := newMaker(t, root, 1)
	m.chmod(".", 0o755)
	for _, n := range []int{0, 1, 64, 65, 4096, 4097, 1 << 20} {
		m.file(fmt.Sprintf("regular/size-%d", n), m.bytes(n), 0o644)
	}
	dup := m.bytes(4097)
	m.file("regular/dup-1", dup, 0o644)
	m.file("regular/dup-2", dup, 0o600) // same content, one object
	m.file("regular/empty-a", nil, 0o644)
	m.file("regular/empty-b", nil, 0o400)
	m.file("regular/zeros-8k", make([]byte, 8192), 0o644)
	if withSparse {
		f, err := os.Create(m.p("regular/sparse-1g"))
		m.check(err, "create", "regular/sparse-1g")
		m.check(f.Truncate(1<<30), "truncate", "regular/sparse-1g")
		f.Close()
	}

	m.dir("links", 0o755)
	m.symlink("links/relative", "../regular/size-1")
	m.symlink("links/absolute", "/usr/bin/env")
	m.symlink("links/dangling", "does/not/exist")
	m.symlink("links/to-dir", "../regular")
	m.symlink("links/long", strings.Repeat("long-target/", 80)+"end")

	m.dir("special", 0o755)
	m.check(unix.Mkfifo(m.p("special/fifo"), 0o644), "mkfifo", "special/fifo")
	m.chmod("special/fifo", 0o620)
	m.mknod("special/null", unix.S_IFCHR|0o666, 1, 3)
	m.mknod("special/loop9", unix.S_IFBLK|0o660, 7, 9)
	m.mknod("special/bignum", unix.S_IFCHR|0o600, 4000, 1<<19) // minor beyond 16 bits

	m.file("hard/big-a", m.bytes(5000), 0o644)
	m.link("hard/big-b", "hard/big-a")
	m.dir("hard/sub", 0o755)
	m.link("hard/sub/big-c", "hard/big-a")
	m.file("hard/small-a", []byte("small and linked"), 0o640)
	m.link("hard/small-b", "hard/small-a")
	m.file("hard/empty-a", nil, 0o644)
	m.link("hard/empty-b", "hard/empty-a")
	m.symlink("hard/sym-a", "target-of-a-linked-symlink")
	m.link("hard/sym-b", "hard/sym-a")

	m.dir("xattrs", 0o755)
	m.file("xattrs/file", m.bytes(300), 0o644)
	m.xattr("xattrs/file", "user.plain", []byte("value"))
	m.xattr("xattrs/file", "user.empty", nil)
	m.xattr("xattrs/file", "user.big", bytes.Repeat([]byte("x"), 2000))
	m.xattr("xattrs/file", "trusted.binary", []byte{0, 1, 2, 0xff, 0})
	m.xattr("xattrs/file", "security.cfs-test", []byte("label"))
	m.file("xattrs/inline", []byte("tiny"), 0o644)
	m.xattr("xattrs/inline", "user.on-inline", []byte("1"))
	m.xattr("xattrs", "user.on-dir", []byte("dir value"))
	m.xattr("xattrs", "trusted.on-dir", []byte("t"))
	m.symlink("xattrs/symlink", "file")
	m.xattr("xattrs/symlink", "trusted.on-symlink", []byte("s"))

	m.dir("owners", 0o755)
	m.file("owners/u100000", []byte("owned by 100000"), 0o644)
	m.chown("owners/u100000", 100000, 100001)
	m.file("owners/u3e9", m.bytes(100), 0o644)
	m.chown("owners/u3e9", 3000000000, 65536)
	m.dir("owners/dir70000", 0o750)
	m.chown("owners/dir70000", 70000, 0)
	m.symlink("owners/link", "u100000")
	m.chown("owners/link", 65537, 65538)

	m.dir("modes", 0o755)
	m.file("modes/setuid", []byte("#!/bin/true\n"), 0o4755)
	m.file("modes/setgid", m.bytes(100), 0o2711)
	m.file("modes/none", []byte("x"), 0)
	m.dir("modes/sticky", 0o1777)
	m.dir("modes/sgid-dir", 0o2770)
	m.dir("modes/empty-dir", 0o700)

	m.file("deep/a/b/c/d/e/f/g/file", []byte("deep"), 0o644)
	m.file("times/zero-ns", []byte("0"), 0o644)
	m.mtime("times/zero-ns", 1700000000, 0)
	m.file("times/max-ns", []byte("9"), 0o644)
	m.mtime("times/max-ns", 1700000000, 999999999)
	m.file("times/epoch", []byte("e"), 0o644)
	m.mtime("times/epoch", 0, 1)
	m.file("times/2100", []byte("f"), 0o644)
	m.mtime("times/2100", 4102444800, 5)
	m.finish()
}

// compareOptions relax the comparison.
type compareOptions struct {
	// emptyDirs are relative paths that must be empty directories in the
	// mount although the source has entries there (mount points).
	emptyDirs map[string]bool
}

// inode identifies a file of a mount or a source.
type inode struct{ dev, ino uint64 }

// treeCompare checks a mounted commit against its source, entry by entry.
type treeCompare struct {
	t        *testing.T
	src, mnt string
	opts     compareOptions
	srcIno   map[inode]string
	mntIno   map[inode]string
	entries  int
	problems int
}

// compareTrees checks that mnt shows the same tree as src: names, types,
// modes, owners, mtimes with nanoseconds, sizes, contents, symlink
// targets, device numbers, xattrs (but overlayfs's own) and which names
// share an inode. It returns the number of entries compared.
func compareTrees(t *testing.T, src, mnt string, opts compareOptions) int {
	t.Helper()
	c := &treeCompare{t: t, src: src, mnt: mnt, opts: opts,
		srcIno: map[inode]string{}, mntIno: map[inode]string{}}
	c.entry(".")
	return c.entries
}

func (c *treeCompare) errorf(rel, format string, args ...any) {
	c.t.Helper()
	c.problems++
	if c.problems <= 40 {
		c.t.Errorf("%q: %s", rel, fmt.Sprintf(format, args...))
	} else if c.problems == 41 {
		c.t.Error("too many differences; not reporting more")
	}
}

func (c *treeCompare) entry(rel string) {
	c.t.Helper()
	c.entries++
	sp, mp := filepath.Join(c.src, rel), filepath.Join(c.mnt, rel)
	var ss, ms unix.Stat_t
	if err := unix.Lstat(sp, &ss); err != nil {
		c.t.Fatalf("lstat source: %v", err)
	}
	if err := unix.Lstat(mp, &ms); err != nil {
		c.errorf(rel, "missing in the mount: %v", err)
		return
	}
	st, mt := ss.Mode&unix.S_IFMT, ms.Mode&unix.S_IFMT
	if st != mt {
		c.errorf(rel, "type %#o in the mount, %#o in the source", mt, st)
		return
	}
	if ss.Mode != ms.Mode {
		c.errorf(rel, "mode %#o, want %#o", ms.Mode&0o7777, ss.Mode&0o7777)
	}
	if ss.Uid != ms.Uid || ss.Gid != ms.Gid {
		c.errorf(rel, "owner %d:%d, want %d:%d", ms.Uid, ms.Gid, ss.Uid, ss.Gid)
	}
	if ss.Mtim != ms.Mtim {
		c.errorf(rel, "mtime %d.%09d, want %d.%09d", ms.Mtim.Sec, ms.Mtim.Nsec, ss.Mtim.Sec, ss.Mtim.Nsec)
	}
	if st != unix.S_IFDIR && ss.Size != ms.Size {
		c.errorf(rel, "size %d, want %d", ms.Size, ss.Size)
	}
	if (st == unix.S_IFCHR || st == unix.S_IFBLK) && ss.Rdev != ms.Rdev {
		c.errorf(rel, "device %d:%d, want %d:%d", unix.Major(ms.Rdev), unix.Minor(ms.Rdev), unix.Major(ss.Rdev), unix.Minor(ss.Rdev))
	}
	if st != unix.S_IFDIR || !c.opts.emptyDirs[rel] {
		if ss.Nlink != ms.Nlink {
			c.errorf(rel, "nlink %d, want %d", ms.Nlink, ss.Nlink)
		}
	}
	switch st {
	case unix.S_IFREG:
		if err := sameContent(sp, mp); err != nil {
			c.errorf(rel, "%v", err)
		}
	case unix.S_IFLNK:
		a, err1 := os.Readlink(sp)
		b, err2 := os.Readlink(mp)
		if err1 != nil || err2 != nil || a != b {
			c.errorf(rel, "symlink target %q (%v), want %q (%v)", b, err2, a, err1)
		}
	}
	sx, err := listXattrs(sp)
	if err != nil {
		c.t.Fatal(err)
	}
	mx, err := listXattrs(mp)
	if err != nil {
		c.errorf(rel, "%v", err)
	} else if a, b := visible(sx), visible(mx); !maps.Equal(a, b) {
		c.errorf(rel, "xattrs %s, want %s", fmtXattrs(b), fmtXattrs(a))
	}
	// Names share an inode in the mount exactly when they do in the
	// source.
	if st != unix.S_IFDIR {
		si, mi := inode{ss.Dev, ss.Ino}, inode{ms.Dev, ms.Ino}
		firstSrc, seenSrc := c.srcIno[si]
		firstMnt, seenMnt := c.mntIno[mi]
		switch {
		case seenSrc && !seenMnt:
			c.errorf(rel, "a hard link of %q in the source, its own inode in the mount", firstSrc)
		case seenMnt && (!seenSrc || firstSrc != firstMnt):
			c.errorf(rel, "shares its inode with %q in the mount, not in the source", firstMnt)
		}
		if !seenSrc {
			c.srcIno[si] = rel
		}
		if !seenMnt {
			c.mntIno[mi] = rel
		}
	}
	if st != unix.S_IFDIR {
		return
	}
	sn, err := names(sp)
	if err != nil {
		c.t.Fatal(err)
	}
	mn, err := names(mp)
	if err != nil {
		c.errorf(rel, "%v", err)
		return
	}
	if c.opts.emptyDirs[rel] {
		if len(mn) != 0 {
			c.errorf(rel, "a mount point in the source: must be an empty directory, has %q", mn)
		}
		return
	}
	if !slices.Equal(sn, mn) {
		c.errorf(rel, "entries %q, want %q", mn, sn)
	}
	for _, n := range sn {
		if slices.Contains(mn, n) {
			c.entry(filepath.Join(rel, n))
		}
	}
}

func names(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := f.Readdirnames(-1)
	sort.Strings(n)
	return n, err
}

// sameContent compares two files a chunk at a time (one may be 1 GiB).
func sameContent(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return fmt.Errorf("open through the mount: %w", err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if eb != nil && eb != io.EOF && eb != io.ErrUnexpectedEOF {
			return fmt.Errorf("read through the mount at %d: %w", off, eb)
		}
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("content differs in the %d bytes from %d", max(na, nb), off)
		}
		if ea != nil {
			return nil
		}
		off += int64(na)
	}
}

func listXattrs(path string) (map[string]string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		return nil, fmt.Errorf("llistxattr %s: %w", path, err)
	}
	out := map[string]string{}
	for _, k := range bytes.Split(buf[:n], []byte{0}) {
		if len(k) == 0 {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(path, string(k), v)
		if err != nil {
			return nil, fmt.Errorf("lgetxattr %s %s: %w", path, k, err)
		}
		out[string(k)] = string(v[:m])
	}
	return out, nil
}

// visible drops what overlayfs and the host's LSM add.
func visible(x map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range x {
		if strings.HasPrefix(k, "trusted.overlay.") || strings.HasPrefix(k, "user.overlay.") {
			continue
		}
		if k == "security.selinux" && selinux {
			continue
		}
		out[k] = v
	}
	return out
}

var selinux = func() bool {
	_, err := os.Stat("/sys/fs/selinux/enforce")
	return err == nil
}()

func fmtXattrs(x map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(x)) {
		v := x[k]
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	return "{" + strings.Join(parts, " ") + "}"
}
