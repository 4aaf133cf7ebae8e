package etcmerge

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// ent is one entry of a test tree: what a fixture writes to disk or turns
// into an image node, and what reading a directory back gives.
type ent struct {
	typ      uint32 // erofs.ModeReg, ModeDir, ...
	perm     uint32
	uid, gid uint32
	data     string // content, or symlink target
	rdev     uint64
	mtime    erofs.Timespec // not read back for directories
	xattrs   map[string]string
	linkTo   string // a hard link to this path (image nodes and disk)
}

// tree maps paths relative to /etc ("" is /etc) to entries.
type tree map[string]ent

var (
	tOld   = erofs.Timespec{Sec: 1_000_000_000, Nsec: 1}
	tNew   = erofs.Timespec{Sec: 1_600_000_000, Nsec: 2}
	tLocal = erofs.Timespec{Sec: 1_700_000_000, Nsec: 3}
)

func file(data string, perm uint32) ent {
	return ent{typ: erofs.ModeReg, perm: perm, data: data, mtime: tOld}
}
func dir(perm uint32) ent { return ent{typ: erofs.ModeDir, perm: perm, mtime: tOld} }
func symlink(target string) ent {
	return ent{typ: erofs.ModeSymlink, perm: 0o777, data: target, mtime: tOld}
}

// local returns e as changed locally: with the local mtime.
func (e ent) local() ent { e.mtime = tLocal; return e }

// fresh returns e as the new image has it.
func (e ent) fresh() ent { e.mtime = tNew; return e }

func (e ent) owner(uid, gid uint32) ent { e.uid, e.gid = uid, gid; return e }

func (e ent) xattr(k, v string) ent {
	e.xattrs = maps.Clone(e.xattrs)
	if e.xattrs == nil {
		e.xattrs = map[string]string{}
	}
	e.xattrs[k] = v
	return e
}

func (tr tree) clone() tree { return maps.Clone(tr) }

// del removes p and everything below it.
func (tr tree) del(p string) {
	for k := range tr {
		if k == p || strings.HasPrefix(k, p+"/") {
			delete(tr, k)
		}
	}
}

// mod replaces the entry at p with a modified copy.
func (tr tree) mod(p string, f func(e ent) ent) {
	e, ok := tr[p]
	if !ok {
		panic("no entry " + p)
	}
	tr[p] = f(e)
}

// oldImage is the /etc of the image the local /etc was checked out from.
func oldImage() tree {
	sshd := strings.Repeat("# sshd configuration line\n", 20) + "PermitRootLogin no\n"
	return tree{
		"":                     dir(0o755),
		"hostname":             file("old-host\n", 0o644),
		"motd":                 file(strings.Repeat("Welcome to the machine.\n", 10), 0o644),
		"passwd":               file("root:x:0:0:root:/root:/bin/sh\n", 0o644),
		"shadow":               file("root:*:19000:0:99999:7:::\n", 0o640).owner(0, 42),
		"sudoers":              file("root ALL=(ALL) ALL\n", 0o440).xattr("user.test", "sudo"),
		"shells":               file(strings.Repeat("/bin/sh\n/bin/bash\n", 5), 0o644),
		"shells.link":          {typ: erofs.ModeReg, linkTo: "shells"},
		"os-release":           symlink("../usr/lib/os-release"),
		"localtime":            symlink("/usr/share/zoneinfo/UTC"),
		"initctl":              {typ: erofs.ModeFifo, perm: 0o600, mtime: tOld},
		"console":              {typ: erofs.ModeChr, perm: 0o600, rdev: unix.Mkdev(5, 1), mtime: tOld},
		"ssh":                  dir(0o755).xattr("user.dir", "ssh"),
		"ssh/sshd_config":      file(sshd, 0o644),
		"ssh/ssh_host_key":     file("private\n", 0o600),
		"ssh/moduli":           file(strings.Repeat("0123456789abcdef", 100<<10/16), 0o644),
		"default":              dir(0o755),
		"default/grub":         file("GRUB_TIMEOUT=5\n", 0o644),
		"default/locale":       file("LANG=C.UTF-8\n", 0o644),
		"cron.d":               dir(0o755),
		"cron.d/job":           file("* * * * * root true\n", 0o644),
		"systemd":              dir(0o755),
		"systemd/system":       dir(0o755),
		"systemd/system/a.svc": symlink("/usr/lib/systemd/system/a.service"),
	}
}

// newImage is oldImage with the changes every case's new image makes:
// the merge must keep them wherever the local /etc did not change.
func newImage() tree {
	tr := oldImage()
	tr["motd"] = file("Welcome to version 2.\n", 0o644).fresh()
	tr["new-default.conf"] = file("shipped by version 2\n", 0o644).fresh()
	tr["ssh/sshd_config"] = file(strings.Repeat("# sshd configuration v2\n", 30), 0o644).fresh()
	return tr
}

// image turns a tree into image nodes. Files longer than the inline limit
// are external with a digest (none when noDigest) and their content in
// the returned map.
func image(t testing.TB, tr tree, noDigest bool) (*erofs.Node, map[*erofs.Node][]byte) {
	t.Helper()
	content := map[*erofs.Node][]byte{}
	nodes := map[string]*erofs.Node{}
	for _, p := range slices.Sorted(maps.Keys(tr)) {
		e := tr[p]
		n := &erofs.Node{Name: path.Base(p), Mode: e.typ | e.perm, UID: e.uid, GID: e.gid, Rdev: e.rdev, Mtime: e.mtime, Nlink: 1}
		for _, k := range slices.Sorted(maps.Keys(e.xattrs)) {
			n.Xattrs = append(n.Xattrs, erofs.Xattr{Key: k, Value: e.xattrs[k]})
		}
		switch {
		case e.linkTo != "":
			target := nodes[e.linkTo]
			*n = erofs.Node{Name: n.Name, Mode: target.Mode, LinkTo: target}
			target.Nlink++
		case e.typ == erofs.ModeSymlink:
			n.Payload = e.data
			n.Size = uint64(len(e.data))
		case e.typ == erofs.ModeReg:
			n.Size = uint64(len(e.data))
			if len(e.data) <= erofs.RecommendedInlineMax {
				n.Content = []byte(e.data)
				break
			}
			d := verity.DigestBytes([]byte(e.data))
			n.Payload = d.ObjectPath()
			if !noDigest {
				n.Digest = d
			}
			content[n] = []byte(e.data)
		}
		nodes[p] = n
		if p == "" {
			n.Name = ""
			continue
		}
		if err := nodes[parentOf(p)].AddChild(n); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	return nodes[""], content
}

func parentOf(p string) string {
	if d := path.Dir(p); d != "." {
		return d
	}
	return ""
}

// base returns tr as the Base of an image, with Open over memory.
func base(t testing.TB, tr tree, noDigest bool) Base {
	root, content := image(t, tr, noDigest)
	return Base{Root: root, Open: func(n *erofs.Node) (io.ReadCloser, error) {
		n = n.Target()
		if n.Content != nil {
			return io.NopCloser(bytes.NewReader(n.Content)), nil
		}
		c, ok := content[n]
		if !ok {
			return nil, fmt.Errorf("%s: no content", n.Path())
		}
		return io.NopCloser(bytes.NewReader(c)), nil
	}}
}

// write makes dir (which may exist, empty) hold tr, like a checkout does.
func write(t testing.TB, dir string, tr tree) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	paths := slices.Sorted(maps.Keys(tr))
	for _, p := range paths {
		e, full := tr[p], filepath.Join(dir, p)
		switch {
		case p == "":
		case e.linkTo != "":
			must(os.Link(filepath.Join(dir, e.linkTo), full))
			continue
		case e.typ == erofs.ModeDir:
			must(os.Mkdir(full, 0o700))
		case e.typ == erofs.ModeReg:
			must(os.WriteFile(full, []byte(e.data), 0o600))
		case e.typ == erofs.ModeSymlink:
			must(os.Symlink(e.data, full))
		default:
			must(unix.Mknod(full, e.typ|0o600, int(e.rdev)))
		}
		if e.typ != erofs.ModeDir {
			setMetaTest(t, full, e)
		}
	}
	// Directories last, deepest first, so their mtimes stay.
	for _, p := range slices.Backward(paths) {
		if e := tr[p]; e.typ == erofs.ModeDir {
			setMetaTest(t, filepath.Join(dir, p), e)
		}
	}
}

func setMetaTest(t testing.TB, p string, e ent) {
	t.Helper()
	if err := os.Lchown(p, int(e.uid), int(e.gid)); err != nil {
		t.Fatal(err)
	}
	if e.typ != erofs.ModeSymlink {
		if err := unix.Chmod(p, e.perm); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range e.xattrs {
		if err := unix.Lsetxattr(p, k, []byte(v), 0); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	ts := unix.Timespec{Sec: e.mtime.Sec, Nsec: int64(e.mtime.Nsec)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

// read reads dir back as a tree. Hard links read as independent files;
// directory mtimes are left out (creating entries changes them).
func read(t testing.TB, dir string) tree {
	t.Helper()
	tr := tree{}
	err := filepath.WalkDir(dir, func(full string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, full)
		if rel == "." {
			rel = ""
		}
		var st unix.Stat_t
		if err := unix.Lstat(full, &st); err != nil {
			return err
		}
		e := ent{typ: st.Mode & unix.S_IFMT, perm: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid,
			mtime: erofs.Timespec{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}}
		switch e.typ {
		case erofs.ModeDir:
			e.mtime = erofs.Timespec{}
		case erofs.ModeReg:
			b, err := os.ReadFile(full)
			if err != nil {
				return err
			}
			e.data = string(b)
		case erofs.ModeSymlink:
			e.perm = 0o777
			if e.data, err = os.Readlink(full); err != nil {
				return err
			}
		case erofs.ModeChr, erofs.ModeBlk:
			e.rdev = st.Rdev
		}
		xs, err := readXattrs(-1, full)
		if err != nil {
			return err
		}
		for _, x := range xs {
			e = e.xattr(x.Key, x.Value)
		}
		tr[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// expected normalizes a spec tree to what read returns: hard links as
// the files they link to, no directory mtimes.
func expected(tr tree) tree {
	out := tree{}
	for p, e := range tr {
		if e.linkTo != "" {
			e = tr[e.linkTo]
		}
		if e.typ == erofs.ModeDir {
			e.mtime = erofs.Timespec{}
		}
		out[p] = e
	}
	return out
}

// diffTrees describes how got differs from want, "" if not.
func diffTrees(got, want tree) string {
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[p]
		switch {
		case !ok:
			fmt.Fprintf(&b, "  /%s: missing, want %s\n", p, want[p])
		case !entEqual(g, want[p]):
			fmt.Fprintf(&b, "  /%s: got %s\n  %*s  want %s\n", p, g, len(p), "", want[p])
		}
	}
	for _, p := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[p]; !ok {
			fmt.Fprintf(&b, "  /%s: unexpected %s\n", p, got[p])
		}
	}
	return b.String()
}

func entEqual(a, b ent) bool {
	return a.typ == b.typ && a.perm == b.perm && a.uid == b.uid && a.gid == b.gid && a.data == b.data &&
		a.rdev == b.rdev && a.mtime == b.mtime && maps.Equal(a.xattrs, b.xattrs)
}

func (e ent) String() string {
	data := e.data
	if len(data) > 24 {
		data = fmt.Sprintf("%.24q... (%d bytes)", data, len(data))
	} else {
		data = fmt.Sprintf("%q", data)
	}
	return fmt.Sprintf("%s %#o %d:%d %s rdev=%d mtime=%d.%d xattrs=%v",
		typeName(e.typ), e.perm, e.uid, e.gid, data, e.rdev, e.mtime.Sec, e.mtime.Nsec, e.xattrs)
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, mknod, trusted xattrs)")
	}
}
