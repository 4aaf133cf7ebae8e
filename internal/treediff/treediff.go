// Package treediff compares two composefs trees entry by entry.
package treediff

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
)

// Kind says how an entry differs.
type Kind string

const (
	Added    Kind = "added"
	Removed  Kind = "removed"
	Content  Kind = "content" // regular file content or symlink target
	Metadata Kind = "metadata"
	TypeChg  Kind = "type"
)

// Change is one differing path. Fields lists what changed for Metadata.
type Change struct {
	Path   string   `json:"path"`
	Kind   Kind     `json:"kind"`
	Fields []string `json:"fields,omitempty"`
}

// Diff lists the differences from a to b in path order. Hard links are
// compared by what they link to.
func Diff(a, b *erofs.Node) []Change {
	var out []Change
	if f := metadataDiff(a, b); len(f) > 0 {
		out = append(out, Change{Path: "/", Kind: Metadata, Fields: f})
	}
	diffDir(a, b, "", &out)
	return out
}

func diffDir(a, b *erofs.Node, prefix string, out *[]Change) {
	i, j := 0, 0
	ac, bc := a.Children, b.Children
	for i < len(ac) || j < len(bc) {
		switch {
		case j >= len(bc) || i < len(ac) && ac[i].Name < bc[j].Name:
			walkAll(ac[i], prefix, Removed, out)
			i++
		case i >= len(ac) || bc[j].Name < ac[i].Name:
			walkAll(bc[j], prefix, Added, out)
			j++
		default:
			diffEntry(ac[i], bc[j], prefix+"/"+ac[i].Name, out)
			i++
			j++
		}
	}
}

func walkAll(n *erofs.Node, prefix string, k Kind, out *[]Change) {
	p := prefix + "/" + n.Name
	*out = append(*out, Change{Path: p, Kind: k})
	if n.LinkTo == nil {
		for _, c := range n.Children {
			walkAll(c, p, k, out)
		}
	}
}

func diffEntry(x, y *erofs.Node, path string, out *[]Change) {
	a, b := x.Target(), y.Target()
	if a.Type() != b.Type() {
		*out = append(*out, Change{Path: path, Kind: TypeChg})
		walkChildren(x, path, Removed, out)
		walkChildren(y, path, Added, out)
		return
	}
	if contentDiffers(a, b) {
		*out = append(*out, Change{Path: path, Kind: Content})
	}
	if f := metadataDiff(a, b); len(f) > 0 {
		*out = append(*out, Change{Path: path, Kind: Metadata, Fields: f})
	}
	if a.IsDir() && x.LinkTo == nil && y.LinkTo == nil {
		diffDir(x, y, path, out)
	}
}

func walkChildren(n *erofs.Node, path string, k Kind, out *[]Change) {
	if n.LinkTo != nil {
		return
	}
	for _, c := range n.Children {
		walkAll(c, path, k, out)
	}
}

func contentDiffers(a, b *erofs.Node) bool {
	switch {
	case a.IsSymlink():
		return a.Payload != b.Payload
	case a.IsRegular():
		if a.Size != b.Size || (a.Content == nil) != (b.Content == nil) {
			return true
		}
		if a.Content != nil {
			return !bytes.Equal(a.Content, b.Content)
		}
		return a.Digest != b.Digest || a.Payload != b.Payload
	}
	return false
}

func metadataDiff(a, b *erofs.Node) []string {
	var f []string
	if a.Mode != b.Mode {
		f = append(f, fmt.Sprintf("mode %o->%o", a.Mode&0o7777, b.Mode&0o7777))
	}
	if a.UID != b.UID || a.GID != b.GID {
		f = append(f, fmt.Sprintf("owner %d:%d->%d:%d", a.UID, a.GID, b.UID, b.GID))
	}
	if a.Mtime != b.Mtime {
		f = append(f, "mtime")
	}
	if (a.Type() == erofs.ModeChr || a.Type() == erofs.ModeBlk) && a.Rdev != b.Rdev {
		f = append(f, "rdev")
	}
	if !a.IsDir() && a.Nlink != b.Nlink {
		f = append(f, "nlink")
	}
	if !sameXattrs(a.Xattrs, b.Xattrs) {
		f = append(f, "xattrs")
	}
	return f
}

func sameXattrs(a, b []erofs.Xattr) bool {
	if len(a) != len(b) {
		return false
	}
	sa := append([]erofs.Xattr(nil), a...)
	sb := append([]erofs.Xattr(nil), b...)
	less := func(s []erofs.Xattr) func(i, j int) bool {
		return func(i, j int) bool { return s[i].Key < s[j].Key }
	}
	sort.Slice(sa, less(sa))
	sort.Slice(sb, less(sb))
	for i := range sa {
		if sa[i] != sb[i] {
			return false
		}
	}
	return true
}
