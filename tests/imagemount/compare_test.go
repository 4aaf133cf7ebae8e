package imagemount

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// xattrs returns the extended attributes of path (not following
// symlinks), all namespaces the caller may read.
func xattrs(path string) (map[string]string, error) {
	size, err := unix.Llistxattr(path, nil)
	if err != nil {
		return nil, fmt.Errorf("llistxattr %s: %w", path, err)
	}
	buf := make([]byte, size+256)
	size, err = unix.Llistxattr(path, buf)
	if err != nil {
		return nil, fmt.Errorf("llistxattr %s: %w", path, err)
	}
	out := map[string]string{}
	for _, k := range bytes.Split(buf[:size], []byte{0}) {
		if len(k) == 0 {
			continue
		}
		key := string(k)
		val := make([]byte, 64<<10)
		n, err := unix.Lgetxattr(path, key, val)
		if err != nil {
			return nil, fmt.Errorf("lgetxattr %s %s: %w", path, key, err)
		}
		out[key] = string(val[:n])
	}
	return out, nil
}

// userVisible drops the overlayfs xattrs: trusted.overlay.* and
// user.overlay.* are the overlay's and the image's own bookkeeping.
func userVisible(x map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range x {
		if strings.HasPrefix(k, "trusted.overlay.") || strings.HasPrefix(k, "user.overlay.") {
			continue
		}
		if k == "security.selinux" && selinuxEnabled {
			// The host's LSM labels the mount; source labels differ.
			continue
		}
		out[k] = v
	}
	return out
}

var selinuxEnabled = func() bool {
	_, err := os.Stat("/sys/fs/selinux/enforce")
	return err == nil
}()

func fmtXattrs(x map[string]string) string {
	keys := slices.Sorted(maps.Keys(x))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %q=%q", k, x[k])
	}
	return b.String()
}

// inodeID identifies an inode of a mount.
type inodeID struct{ dev, ino uint64 }

// comparison walks a source tree and its composefs mount side by side.
type comparison struct {
	t         *testing.T
	src       *source
	mnt       string
	hardlinks bool // the image was built with --hardlinks

	whiteouts map[string]bool
	inodes    map[inodeID]string // mount inode → first relative path
	srcInodes map[inodeID]string // source inode → first relative path
	entries   int
	errors    int
}

func (c *comparison) errorf(rel, format string, args ...any) {
	c.t.Helper()
	c.errors++
	if c.errors > 50 {
		if c.errors == 51 {
			c.t.Error("too many differences; stopping the report")
		}
		return
	}
	c.t.Errorf("/%s: %s", quote(rel), fmt.Sprintf(format, args...))
}

// compare checks the whole tree and returns the number of entries seen.
func (c *comparison) compare() int {
	c.whiteouts = map[string]bool{}
	for _, w := range c.src.whiteouts {
		c.whiteouts[w] = true
	}
	c.inodes = map[inodeID]string{}
	c.srcInodes = map[inodeID]string{}
	c.entry(".")
	return c.entries
}

func (c *comparison) entry(rel string) {
	c.t.Helper()
	c.entries++
	sp, mp := filepath.Join(c.src.dir, rel), filepath.Join(c.mnt, rel)
	var ss, ms unix.Stat_t
	if err := unix.Lstat(sp, &ss); err != nil {
		c.t.Fatalf("lstat source: %v", err)
	}
	if err := unix.Lstat(mp, &ms); err != nil {
		c.errorf(rel, "missing in the mount: %v", err)
		return
	}
	st, mt := ss.Mode&unix.S_IFMT, ms.Mode&unix.S_IFMT

	// Type. A whiteout in the source is an escaped whiteout in the image,
	// which overlayfs shows as an empty regular file carrying
	// trusted.overlay.whiteout (for an overlay stacked on top to act on).
	wantType := st
	if c.whiteouts[rel] {
		wantType = unix.S_IFREG
		if st != unix.S_IFCHR || ss.Rdev != 0 {
			c.t.Fatalf("/%s: the source whiteout is not a 0/0 character device", rel)
		}
		mx, err := xattrs(mp)
		if err != nil {
			c.errorf(rel, "%v", err)
		} else if v, ok := mx["trusted.overlay.whiteout"]; !ok || v != "" {
			c.errorf(rel, "escaped whiteout: trusted.overlay.whiteout missing in the mount (xattrs:%s)", fmtXattrs(mx))
		}
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
	switch {
	case st == unix.S_IFDIR:
		if ms.Nlink != ss.Nlink {
			c.errorf(rel, "directory nlink %d, want %d", ms.Nlink, ss.Nlink)
		}
	case c.hardlinks:
		if ms.Nlink != ss.Nlink {
			c.errorf(rel, "nlink %d, want %d (--hardlinks keeps links)", ms.Nlink, ss.Nlink)
		}
	default:
		if ms.Nlink != 1 {
			c.errorf(rel, "nlink %d, want 1 (mkcomposefs drops hard links)", ms.Nlink)
		}
	}

	switch st {
	case unix.S_IFREG, unix.S_IFLNK:
		if ms.Size != ss.Size {
			c.errorf(rel, "size %d, want %d", ms.Size, ss.Size)
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		if !c.whiteouts[rel] && ms.Rdev != ss.Rdev {
			c.errorf(rel, "rdev %d:%d, want %d:%d", unix.Major(ms.Rdev), unix.Minor(ms.Rdev), unix.Major(ss.Rdev), unix.Minor(ss.Rdev))
		}
	}

	// Content and targets.
	switch st {
	case unix.S_IFREG:
		sc, err1 := os.ReadFile(sp)
		mc, err2 := os.ReadFile(mp)
		switch {
		case err1 != nil:
			c.t.Fatal(err1)
		case err2 != nil:
			c.errorf(rel, "reading through the mount: %v", err2)
		case !bytes.Equal(sc, mc):
			c.errorf(rel, "content differs (%d bytes read, want %d; first difference at %d)", len(mc), len(sc), firstDiff(sc, mc))
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

	// Xattrs.
	sx, err := xattrs(sp)
	if err != nil {
		c.t.Fatal(err)
	}
	mx, err := xattrs(mp)
	if err != nil {
		c.errorf(rel, "%v", err)
	} else {
		if want, got := userVisible(sx), userVisible(mx); !maps.Equal(want, got) {
			c.errorf(rel, "xattrs differ\n  mount: %s\n  want:  %s", fmtXattrs(got), fmtXattrs(want))
		}
		for k, v := range c.src.escaped[rel] {
			if got, ok := mx[k]; !ok || got != v {
				c.errorf(rel, "the source's own %s=%q is not shown through the overlay (xattrs:%s)", k, v, fmtXattrs(mx))
			}
		}
	}

	// Inode identity: hard links share an inode only with --hardlinks.
	if st != unix.S_IFDIR {
		mid := inodeID{ms.Dev, ms.Ino}
		sid := inodeID{ss.Dev, ss.Ino}
		firstSrc, srcSeen := c.srcInodes[sid]
		if !srcSeen {
			c.srcInodes[sid] = rel
		}
		if other, ok := c.inodes[mid]; ok {
			if !c.hardlinks || !srcSeen || firstSrc != other {
				c.errorf(rel, "shares inode %d with /%s in the mount", ms.Ino, quote(other))
			}
		} else {
			c.inodes[mid] = rel
			if c.hardlinks && srcSeen {
				c.errorf(rel, "is a hard link of /%s in the source but has its own inode %d in the mount", quote(firstSrc), ms.Ino)
			}
		}
	}

	if st == unix.S_IFDIR {
		sn := readNames(c.t, sp)
		mn, err := readNamesErr(mp)
		if err != nil {
			c.errorf(rel, "%v", err)
			return
		}
		if !slices.Equal(sn, mn) {
			c.errorf(rel, "directory entries differ: only in the mount %v, only in the source %v", quoteAll(minus(mn, sn)), quoteAll(minus(sn, mn)))
		}
		for _, n := range sn {
			if slices.Contains(mn, n) {
				c.entry(filepath.Join(rel, n))
			}
		}
	}
}

func readNamesErr(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("readdir %s: %w", dir, err)
	}
	slices.Sort(names)
	return names, nil
}

// minus returns the sorted names of a that are not in b.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if _, found := slices.BinarySearch(b, x); !found {
			out = append(out, x)
		}
	}
	return out
}

func quoteAll(names []string) []string {
	out := make([]string, 0, min(len(names), 20))
	for i, n := range names {
		if i == 20 {
			out = append(out, fmt.Sprintf("... (%d in all)", len(names)))
			break
		}
		out = append(out, quote(n))
	}
	return out
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func short(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}
