package etcmerge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// Diff lists the local changes of dir (a deployment's writable /etc on
// disk) against base, sorted by path:
//
//   - Added: on disk, not in base;
//   - Deleted: in base, not on disk;
//   - Modified: in both, but type, content, symlink target, device number,
//     mode, owner or xattrs differ (xattrs under trusted.overlay. aside).
//
// A directory added, deleted or of another type is one change, not one per
// entry inside it. A regular file is unmodified only if its size and bytes
// equal the image's. Mtimes are not compared, and each name of a hard link
// is compared as a file of its own. An entry that disappears while Diff
// reads it counts as deleted (What "vanished") if the image has it.
func Diff(base Base, dir string) ([]Change, error) {
	root, err := openRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.close()
	d := &differ{base: base}
	if err := d.run(root); err != nil {
		return nil, err
	}
	return d.changes, nil
}

type differ struct {
	base    Base
	changes []Change
}

func (d *differ) add(k Kind, rel string, what []string) {
	c := Change{Kind: k, Path: rel, What: strings.Join(what, ", ")}
	c.TypeChanged = k == Modified && strings.HasPrefix(c.What, "type ")
	d.changes = append(d.changes, c)
}

func (d *differ) run(root *localDir) error {
	n := d.base.Root
	if n != nil {
		if !n.IsDir() {
			return fmt.Errorf("/etc of the image is a %s, not a directory", typeName(n.Mode))
		}
		var st unix.Stat_t
		if err := unix.Fstat(root.fd, &st); err != nil {
			return &os.PathError{Op: "fstat", Path: root.path, Err: err}
		}
		local := statNode("", &st)
		xs, err := readXattrs(root.fd, root.path)
		if err != nil {
			return err
		}
		local.Xattrs = xs
		if what := metaDiff(n, local); len(what) > 0 {
			d.add(Modified, ".", what)
		}
	}
	if err := d.dir(n, root); err != nil {
		return err
	}
	// The walk emits "a", "a/x", "a-b"; byte order is "a", "a-b", "a/x".
	// Both put a directory before what is inside it, which Merge needs.
	slices.SortFunc(d.changes, func(a, b Change) int { return strings.Compare(a.Path, b.Path) })
	return nil
}

// dir compares the children of the image directory n (nil: none) with
// the entries of the local directory ld.
func (d *differ) dir(n *erofs.Node, ld *localDir) error {
	names, err := ld.names()
	if err != nil {
		return err
	}
	var kids []*erofs.Node
	if n != nil {
		kids = n.Children
	}
	for i, j := 0, 0; i < len(kids) || j < len(names); {
		var kid *erofs.Node
		var name string
		switch {
		case j == len(names) || i < len(kids) && kids[i].Name < names[j]:
			d.add(Deleted, joinRel(ld.rel, kids[i].Name), nil)
			i++
			continue
		case i == len(kids) || names[j] < kids[i].Name:
			name = names[j]
			j++
		default:
			kid, name = kids[i], names[j]
			i++
			j++
		}
		sub, err := d.entry(kid, ld, name)
		if err != nil {
			return err
		}
		if sub != nil {
			err := d.dir(kid, sub)
			sub.close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// entry compares the local entry name of ld with the image's node n (nil:
// not in the image). When both are directories it returns the local one,
// open, for the caller to descend into.
func (d *differ) entry(n *erofs.Node, ld *localDir, name string) (*localDir, error) {
	rel := joinRel(ld.rel, name)
	for try := 1; ; try++ {
		hook(hookStat, rel)
		what, sub, err := d.compare(n, ld, name)
		switch {
		case errors.Is(err, errChanged) && try < retries:
			continue
		case errors.Is(err, errVanished):
			if n != nil {
				d.add(Deleted, rel, []string{whatVanished})
			}
			return nil, nil
		case err != nil:
			return nil, err
		case n == nil:
			d.add(Added, rel, nil)
		case len(what) > 0:
			d.add(Modified, rel, what)
		}
		return sub, nil
	}
}

// compare returns how the local entry name of ld differs from n (nil: not
// in the image, and then only the entry's existence is checked).
func (d *differ) compare(n *erofs.Node, ld *localDir, name string) (what []string, sub *localDir, err error) {
	st, err := ld.lstat(name)
	if err != nil || n == nil {
		return nil, nil, err
	}
	n = n.Target()
	if lt := st.Mode & unix.S_IFMT; lt != n.Type() {
		return []string{"type " + typeName(n.Mode) + "->" + typeName(lt)}, nil, nil
	}
	local := statNode(name, st)
	xattrFD, haveXattrs := -1, false
	switch n.Type() {
	case erofs.ModeDir:
		if sub, err = ld.openDir(name); err != nil {
			return nil, nil, err
		}
		// The metadata of what was opened, in case it was replaced
		// since the lstat.
		var st unix.Stat_t
		if err := unix.Fstat(sub.fd, &st); err != nil {
			sub.close()
			return nil, nil, &os.PathError{Op: "fstat", Path: sub.path, Err: err}
		}
		local = statNode(name, &st)
		xattrFD = sub.fd
	case erofs.ModeReg:
		same, opened, err := d.sameContent(n, ld, name, st, local)
		if err != nil {
			return nil, nil, err
		}
		if !same {
			what = append(what, whatContent)
		}
		haveXattrs = opened
	case erofs.ModeSymlink:
		target, err := ld.readlink(name)
		if err != nil {
			return nil, nil, err
		}
		if target != n.Payload {
			what = append(what, whatTarget)
		}
	case erofs.ModeChr, erofs.ModeBlk:
		if local.Rdev != n.Rdev {
			what = append(what, whatDevice)
		}
	}
	if !haveXattrs {
		if local.Xattrs, err = readXattrs(xattrFD, ld.entryPath(name)); err != nil {
			if sub != nil {
				sub.close()
			}
			return nil, nil, err
		}
	}
	return append(what, metaDiff(n, local)...), sub, nil
}

// metaDiff compares the mode (but a symlink's), owner and xattrs of an
// image node and a local one of the same type; local.Xattrs is sorted and
// without ignored keys.
func metaDiff(n, local *erofs.Node) []string {
	var what []string
	if !n.IsSymlink() && n.Mode&0o7777 != local.Mode&0o7777 {
		what = append(what, whatMode)
	}
	if n.UID != local.UID || n.GID != local.GID {
		what = append(what, whatOwner)
	}
	if !sameXattrs(n.Xattrs, local.Xattrs) {
		what = append(what, whatXattrs)
	}
	return what
}

// sameXattrs compares the image's xattrs (any order, possibly with
// ignored keys) with sorted local ones.
func sameXattrs(img, local []erofs.Xattr) bool {
	var kept []erofs.Xattr
	for _, x := range img {
		if !ignoredXattr(x.Key) {
			kept = append(kept, x)
		}
	}
	if len(kept) != len(local) {
		return false
	}
	slices.SortFunc(kept, func(a, b erofs.Xattr) int { return strings.Compare(a.Key, b.Key) })
	return slices.Equal(kept, local)
}

// sameContent reports whether the local regular file name of ld has the
// content of the image's file n; st and local hold what lstat said of it.
// If it opens the file, it sets local to the open file's metadata and
// xattrs (cheaper through the descriptor than by path) and reports opened.
func (d *differ) sameContent(n *erofs.Node, ld *localDir, name string, st *unix.Stat_t, local *erofs.Node) (same, opened bool, err error) {
	if local.Size != n.Size {
		return false, false, nil
	}
	f, err := ld.openFile(name, st)
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	*local = *statNode(name, &f.st)
	if local.Xattrs, err = readXattrs(f.fd, f.name); err != nil {
		return false, false, err
	}
	same, err = d.sameAs(n, f)
	return same, true, err
}

// sameAs compares the content of f, an open local file the size of the
// image's file n, with n's.
func (d *differ) sameAs(n *erofs.Node, f *rawFile) (bool, error) {
	if n.Content != nil || n.Size == 0 {
		// Inline content: small, compare directly. Reading one byte
		// more than expected notices a file that grew meanwhile.
		got, err := io.ReadAll(io.LimitReader(f, int64(len(n.Content))+1))
		if err != nil {
			return false, err
		}
		return bytes.Equal(got, n.Content), nil
	}
	if want, ok := imageDigest(n); ok {
		// Read to the end, whatever the size now: a file that grew or
		// shrank since the lstat has another digest.
		got, _, err := verity.DigestReader(f)
		if err != nil {
			return false, err
		}
		return got == want, nil
	}
	if d.base.Open == nil {
		return false, fmt.Errorf("%s: the image records no digest for its content and no way to read it", n.Path())
	}
	img, err := d.base.Open(n)
	if err != nil {
		return false, err
	}
	defer img.Close()
	return sameStream(img, f, n.Path(), f.name)
}

// imageDigest returns the fs-verity digest the image records for the
// external content of n, if it records one.
func imageDigest(n *erofs.Node) (verity.Digest, bool) {
	return n.Digest, !n.Digest.IsZero()
}

// sameStream compares two readers to their ends.
func sameStream(a, b io.Reader, aName, bName string) (bool, error) {
	const size = 32 << 10
	bufA, bufB := make([]byte, size), make([]byte, size)
	for {
		na, errA := io.ReadFull(a, bufA)
		if errA != nil && errA != io.EOF && errA != io.ErrUnexpectedEOF {
			return false, fmt.Errorf("read %s: %w", aName, errA)
		}
		nb, errB := io.ReadFull(b, bufB)
		if errB != nil && errB != io.EOF && errB != io.ErrUnexpectedEOF {
			return false, fmt.Errorf("read %s: %w", bName, errB)
		}
		if na != nb || !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		if na < size {
			return true, nil
		}
	}
}
