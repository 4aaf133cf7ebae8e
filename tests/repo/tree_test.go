package repo

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
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
