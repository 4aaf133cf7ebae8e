// Package treecmp compares a mounted tree (a composefs image or a commit
// of the repository, seen through overlayfs) with the source tree it was
// made from, entry by entry. Only tests import it.
package treecmp

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// Options say where the mount may differ from the source.
type Options struct {
	// HardLinksDropped says the image was made without hard links
	// (mkcomposefs without --hardlinks): every non-directory has one link
	// and its own inode in the mount.
	HardLinksDropped bool
	// EmptyDirs are relative paths that must be empty directories in the
	// mount although the source has entries there (mount points).
	EmptyDirs map[string]bool
	// Whiteouts are the relative paths of overlayfs whiteouts (0/0
	// character devices) in the source. A composefs image escapes them,
	// and overlayfs shows an escaped whiteout as an empty regular file
	// carrying trusted.overlay.whiteout, for an overlay stacked on top to
	// act on.
	Whiteouts []string
	// EscapedXattrs maps relative paths to trusted.overlay.* xattrs the
	// source sets itself: the image escapes them and the mount must show
	// them, although overlayfs's own xattrs are otherwise ignored.
	EscapedXattrs map[string]map[string]string
}

// Compare checks that mnt shows the same tree as src: names, types, modes,
// owners, mtimes with nanoseconds, sizes, contents, symlink targets,
// device numbers, xattrs (but overlayfs's own and the host's SELinux
// labels) and which names share an inode. It reports every difference as
// a test error and returns the number of entries compared.
func Compare(t testing.TB, src, mnt string, opts Options) int {
	t.Helper()
	c := &comparison{t: t, src: src, mnt: mnt, opts: opts,
		whiteouts: map[string]bool{}, srcInodes: map[inode]string{}, mntInodes: map[inode]string{},
		srcBuf: make([]byte, 1<<20), mntBuf: make([]byte, 1<<20)}
	for _, w := range opts.Whiteouts {
		c.whiteouts[w] = true
	}
	c.entry(".")
	return c.entries
}

// inode identifies a file of a mount or a source.
type inode struct{ dev, ino uint64 }

type comparison struct {
	t         testing.TB
	src, mnt  string
	opts      Options
	whiteouts map[string]bool
	srcInodes map[inode]string // source inode → first relative path
	mntInodes map[inode]string // mount inode → first relative path
	entries   int
	problems  int
	// Buffers for comparing contents, made once: allocating them per file
	// made the comparison of thousands of files ten times slower.
	srcBuf, mntBuf []byte
}

// maxReported bounds the report: a broken mount differs everywhere.
const maxReported = 50

func (c *comparison) errorf(rel, format string, args ...any) {
	c.t.Helper()
	c.problems++
	switch {
	case c.problems <= maxReported:
		c.t.Errorf("/%s: %s", Quote(rel), fmt.Sprintf(format, args...))
	case c.problems == maxReported+1:
		c.t.Error("too many differences; not reporting more")
	}
}

func (c *comparison) entry(rel string) {
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
	whiteout := c.whiteouts[rel]
	wantType := st
	if whiteout {
		if st != unix.S_IFCHR || ss.Rdev != 0 {
			c.t.Fatalf("/%s: the source whiteout is not a 0/0 character device", Quote(rel))
		}
		wantType = unix.S_IFREG
	}
	if mt != wantType {
		c.errorf(rel, "file type %#o in the mount, want %#o", mt, wantType)
		return
	}

	if got, want := ms.Mode&0o7777, ss.Mode&0o7777; got != want {
		c.errorf(rel, "mode %#o, want %#o", got, want)
	}
	if ms.Uid != ss.Uid || ms.Gid != ss.Gid {
		c.errorf(rel, "owner %d:%d, want %d:%d", ms.Uid, ms.Gid, ss.Uid, ss.Gid)
	}
	if ms.Mtim != ss.Mtim {
		c.errorf(rel, "mtime %d.%09d, want %d.%09d", ms.Mtim.Sec, ms.Mtim.Nsec, ss.Mtim.Sec, ss.Mtim.Nsec)
	}
	if st != unix.S_IFDIR && ms.Size != ss.Size {
		c.errorf(rel, "size %d, want %d", ms.Size, ss.Size)
	}
	if (st == unix.S_IFCHR || st == unix.S_IFBLK) && !whiteout && ms.Rdev != ss.Rdev {
		c.errorf(rel, "device %d:%d, want %d:%d", unix.Major(ms.Rdev), unix.Minor(ms.Rdev), unix.Major(ss.Rdev), unix.Minor(ss.Rdev))
	}
	c.links(rel, st, &ss, &ms)

	switch st {
	case unix.S_IFREG:
		if err := sameContent(sp, mp, c.srcBuf, c.mntBuf); err != nil {
			c.errorf(rel, "%v", err)
		}
	case unix.S_IFLNK:
		sl, err1 := os.Readlink(sp)
		ml, err2 := os.Readlink(mp)
		switch {
		case err1 != nil:
			c.t.Fatal(err1)
		case err2 != nil:
			c.errorf(rel, "readlink through the mount: %v", err2)
		case sl != ml:
			c.errorf(rel, "symlink target %q (%d bytes), want %q (%d bytes)", short(ml), len(ml), short(sl), len(sl))
		}
	}
	c.xattrs(rel, sp, mp, whiteout)
	if st == unix.S_IFDIR {
		c.dir(rel, sp, mp)
	}
}

// links checks link counts and that names share an inode in the mount
// exactly when they do in the source (or never, without hard links).
func (c *comparison) links(rel string, st uint32, ss, ms *unix.Stat_t) {
	c.t.Helper()
	switch {
	case st == unix.S_IFDIR:
		if !c.opts.EmptyDirs[rel] && ms.Nlink != ss.Nlink {
			c.errorf(rel, "directory nlink %d, want %d", ms.Nlink, ss.Nlink)
		}
		return
	case c.opts.HardLinksDropped:
		if ms.Nlink != 1 {
			c.errorf(rel, "nlink %d, want 1 (the image keeps no hard links)", ms.Nlink)
		}
	default:
		if ms.Nlink != ss.Nlink {
			c.errorf(rel, "nlink %d, want %d", ms.Nlink, ss.Nlink)
		}
	}
	si, mi := inode{ss.Dev, ss.Ino}, inode{ms.Dev, ms.Ino}
	firstSrc, seenSrc := c.srcInodes[si]
	firstMnt, seenMnt := c.mntInodes[mi]
	switch {
	case seenMnt && (c.opts.HardLinksDropped || !seenSrc || firstSrc != firstMnt):
		c.errorf(rel, "shares inode %d with /%s in the mount", ms.Ino, Quote(firstMnt))
	case seenSrc && !seenMnt && !c.opts.HardLinksDropped:
		c.errorf(rel, "is a hard link of /%s in the source but has its own inode %d in the mount", Quote(firstSrc), ms.Ino)
	}
	if !seenSrc {
		c.srcInodes[si] = rel
	}
	if !seenMnt {
		c.mntInodes[mi] = rel
	}
}

func (c *comparison) xattrs(rel, sp, mp string, whiteout bool) {
	c.t.Helper()
	sx, err := Xattrs(sp)
	if err != nil {
		c.t.Fatal(err)
	}
	mx, err := Xattrs(mp)
	if err != nil {
		c.errorf(rel, "%v", err)
		return
	}
	if want, got := Visible(sx), Visible(mx); !maps.Equal(want, got) {
		c.errorf(rel, "xattrs differ\n  mount: %s\n  want:  %s", FormatXattrs(got), FormatXattrs(want))
	}
	if v, ok := mx["trusted.overlay.whiteout"]; whiteout && (!ok || v != "") {
		c.errorf(rel, "escaped whiteout: trusted.overlay.whiteout missing in the mount (xattrs:%s)", FormatXattrs(mx))
	}
	for k, v := range c.opts.EscapedXattrs[rel] {
		if got, ok := mx[k]; !ok || got != v {
			c.errorf(rel, "the source's own %s=%q is not shown through the overlay (xattrs:%s)", k, v, FormatXattrs(mx))
		}
	}
}

func (c *comparison) dir(rel, sp, mp string) {
	c.t.Helper()
	sn, err := ReadNames(sp)
	if err != nil {
		c.t.Fatal(err)
	}
	mn, err := ReadNames(mp)
	if err != nil {
		c.errorf(rel, "%v", err)
		return
	}
	if c.opts.EmptyDirs[rel] {
		if len(mn) != 0 {
			c.errorf(rel, "a mount point in the source: must be an empty directory, has %v", QuoteAll(mn))
		}
		return
	}
	if !slices.Equal(sn, mn) {
		c.errorf(rel, "directory entries differ: only in the mount %v, only in the source %v", QuoteAll(OnlyIn(mn, sn)), QuoteAll(OnlyIn(sn, mn)))
	}
	for _, n := range sn {
		if _, found := slices.BinarySearch(mn, n); found {
			c.entry(filepath.Join(rel, n))
		}
	}
}

func short(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}
