//go:build linux

package mount

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
}

// fixture is a composefs image with its object store, plus what the
// mounted tree must look like.
type fixture struct {
	image   string
	objects string
	root    *erofs.Node
	content map[*erofs.Node][]byte // every regular file's bytes
	digest  verity.Digest          // the image's fs-verity digest
}

var testMtime = erofs.Timespec{Sec: 1700000000, Nsec: 123456789}

// newFixture builds a small tree by hand: inline and external files (one
// object shared by two files), an empty file, a symlink, nested
// directories, odd owners and modes. objDirName names the object store's
// directory, to test paths overlayfs would otherwise split.
func newFixture(t *testing.T, objDirName string) *fixture {
	t.Helper()
	dir := t.TempDir()
	fx := &fixture{
		image:   filepath.Join(dir, "image.cfs"),
		objects: filepath.Join(dir, objDirName),
		content: map[*erofs.Node][]byte{},
	}
	if err := os.Mkdir(fx.objects, 0o755); err != nil {
		t.Fatal(err)
	}
	root := erofs.NewDirectory("", 0o755)
	root.Mtime = testMtime
	fx.root = root

	hello := bytes.Repeat([]byte("hello composefs\n"), 13) // 208 bytes: external
	fx.external(t, root, "hello.txt", 0o644, 0, 0, hello)
	fx.external(t, root, "dup.txt", 0o600, 0, 0, hello) // same object
	fx.inline(t, root, "small.txt", 0o644, 0, 0, []byte("tiny\n"))
	fx.inline(t, root, "empty", 0o640, 0, 0, nil)
	bin := fx.dir(t, root, "bin", 0o755, 0, 0)
	fx.external(t, bin, "tool", 0o4755, 1000, 1000, bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 2000))
	sub := fx.dir(t, root, "sub", 0o750, 1000, 100)
	deeper := fx.dir(t, sub, "deeper", 0o700, 0, 0)
	fx.external(t, deeper, "nested.txt", 0o444, 65534, 65534, bytes.Repeat([]byte("nested\n"), 100))
	link := &erofs.Node{Name: "link", Mode: erofs.ModeSymlink | 0o777, Nlink: 1, Payload: "sub/deeper/nested.txt", Mtime: testMtime}
	if err := root.AddChild(link); err != nil {
		t.Fatal(err)
	}
	fx.write(t)
	return fx
}

func (fx *fixture) dir(t *testing.T, parent *erofs.Node, name string, mode, uid, gid uint32) *erofs.Node {
	t.Helper()
	d := erofs.NewDirectory(name, mode)
	d.UID, d.GID, d.Mtime = uid, gid, testMtime
	if err := parent.AddChild(d); err != nil {
		t.Fatal(err)
	}
	return d
}

func (fx *fixture) inline(t *testing.T, parent *erofs.Node, name string, mode, uid, gid uint32, data []byte) {
	t.Helper()
	n := &erofs.Node{Name: name, Mode: erofs.ModeReg | mode, Nlink: 1, UID: uid, GID: gid,
		Size: uint64(len(data)), Mtime: testMtime}
	if len(data) > 0 {
		n.Content = data
	}
	if err := parent.AddChild(n); err != nil {
		t.Fatal(err)
	}
	fx.content[n] = data
}

// external adds a file whose content lives in the object store under its
// fs-verity digest, and writes that object.
func (fx *fixture) external(t *testing.T, parent *erofs.Node, name string, mode, uid, gid uint32, data []byte) {
	t.Helper()
	d := verity.DigestBytes(data)
	n := &erofs.Node{Name: name, Mode: erofs.ModeReg | mode, Nlink: 1, UID: uid, GID: gid,
		Size: uint64(len(data)), Mtime: testMtime, Payload: d.ObjectPath(), Digest: d}
	if err := parent.AddChild(n); err != nil {
		t.Fatal(err)
	}
	fx.content[n] = data
	obj := filepath.Join(fx.objects, d.ObjectPath())
	if err := os.MkdirAll(filepath.Dir(obj), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(obj, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (fx *fixture) write(t *testing.T) {
	t.Helper()
	f, err := os.Create(fx.image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := erofs.Write(f, fx.root, erofs.DefaultWriteOptions); err != nil {
		t.Fatalf("write image: %v", err)
	}
	if fx.digest, err = verity.DigestFile(f); err != nil {
		t.Fatal(err)
	}
}

func (fx *fixture) opts() Options {
	return Options{Image: fx.image, ObjectDirs: []string{fx.objects}}
}

// view says how the mounted tree may legitimately differ from the image.
type view struct {
	uid, gid  uint32 // added to every owner by an idmapped mount
	upperRoot bool   // an upper directory supplies the root's own metadata
}

// check compares the mounted tree at mnt with fx.root: entry names, file
// types, permission bits, owners (shifted), mtimes, symlink targets and
// every byte of every regular file.
func (fx *fixture) check(t *testing.T, mnt string, shift view) {
	t.Helper()
	err := erofs.Walk(fx.root, func(n *erofs.Node) error {
		p := filepath.Join(mnt, n.Path())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Errorf("%s: %v", n.Path(), err)
			return nil
		}
		if n.Parent == nil && shift.upperRoot {
			fx.checkDir(t, p, n)
			return nil
		}
		if st.Mode != n.Mode {
			t.Errorf("%s: mode %o, want %o", n.Path(), st.Mode, n.Mode)
		}
		if st.Uid != n.UID+shift.uid || st.Gid != n.GID+shift.gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", n.Path(), st.Uid, st.Gid, n.UID+shift.uid, n.GID+shift.gid)
		}
		if st.Mtim.Sec != n.Mtime.Sec || st.Mtim.Nsec != int64(n.Mtime.Nsec) {
			t.Errorf("%s: mtime %d.%09d, want %d.%09d", n.Path(), st.Mtim.Sec, st.Mtim.Nsec, n.Mtime.Sec, n.Mtime.Nsec)
		}
		switch {
		case n.IsDir():
			fx.checkDir(t, p, n)
		case n.IsSymlink():
			if got, err := os.Readlink(p); err != nil || got != n.Payload {
				t.Errorf("%s: readlink %q, %v; want %q", n.Path(), got, err, n.Payload)
			}
		case n.IsRegular():
			got, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("%s: %v", n.Path(), err)
			} else if !bytes.Equal(got, fx.content[n]) {
				t.Errorf("%s: content differs (%d bytes, want %d)", n.Path(), len(got), len(fx.content[n]))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkDir compares a directory's entries; the image's 00..ff whiteouts
// must not show through the overlay.
func (fx *fixture) checkDir(t *testing.T, p string, n *erofs.Node) {
	t.Helper()
	ents, err := os.ReadDir(p)
	if err != nil {
		t.Errorf("%s: %v", n.Path(), err)
		return
	}
	var got, want []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	for _, c := range n.Children {
		want = append(want, c.Name)
	}
	sort.Strings(got)
	if strings.Join(got, "/") != strings.Join(want, "/") {
		t.Errorf("%s: entries %q, want %q", n.Path(), got, want)
	}
}

// mountPoint returns a fresh directory and makes sure whatever ends up
// mounted on it is gone after the test, lazily if need be.
func mountPoint(t *testing.T) string {
	t.Helper()
	mnt := t.TempDir()
	t.Cleanup(func() {
		for range 8 {
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				return
			}
		}
	})
	return mnt
}

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	target, fstype, source, superOpts string
}

func readMountInfo(t *testing.T) []mountInfo {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 {
			continue
		}
		out = append(out, mountInfo{target: unescapeMountInfo(a[4]), fstype: b[0], source: b[1], superOpts: b[2]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// unescapeMountInfo undoes the octal escapes (\040 and so on) of mountinfo.
func unescapeMountInfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func mountsAt(t *testing.T, target string) []mountInfo {
	t.Helper()
	var out []mountInfo
	for _, m := range readMountInfo(t) {
		if m.target == target {
			out = append(out, m)
		}
	}
	return out
}

// checkNoLeftovers fails if a temporary layer mount, its directory, or a
// loop device on the image survived Mount.
func checkNoLeftovers(t *testing.T, image string) {
	t.Helper()
	for _, m := range readMountInfo(t) {
		if strings.Contains(m.target, "/.cfs-mount-") {
			t.Errorf("temporary mount left behind: %+v", m)
		}
	}
	for _, parent := range []string{"/run", os.TempDir()} {
		left, _ := filepath.Glob(filepath.Join(parent, ".cfs-mount-*"))
		if len(left) > 0 {
			t.Errorf("temporary directories left behind: %q", left)
		}
	}
	// Autoclear may run a moment after the last user goes away.
	deadline := time.Now().Add(3 * time.Second)
	for {
		busy := loopsBackedBy(image)
		if len(busy) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("loop devices still backed by %s: %q", image, busy)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func loopsBackedBy(image string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == image {
			out = append(out, f)
		}
	}
	return out
}

// openFDs counts this process's open descriptors, to catch leaks.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // the one ReadDir itself had open
}
