package oci

import (
	"fmt"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/tarimport"
)

// OCI whiteouts (image-spec layer.md): an entry ".wh.NAME" removes NAME
// of the layers below from its directory; ".wh..wh..opq" removes all that
// the layers below put in its directory. Neither appears in the result.
const (
	whiteoutPrefix = ".wh."
	opaqueName     = ".wh..wh..opq"
)

// layer is one layer's tree as imported: entries, whiteout entries among
// them, and what tarimport reports about directories without entries and
// hard links into lower layers.
type layer struct {
	root       *erofs.Node
	implicit   map[*erofs.Node]bool
	lowerLinks map[*erofs.Node]string
}

// flatten applies layers in order onto an empty root and returns it. The
// layers' nodes are moved into the result: each layer can be used once.
func flatten(layers []*layer) (*erofs.Node, error) {
	root := erofs.NewDirectory("", 0o755)
	for i, l := range layers {
		if !l.implicit[l.root] {
			copyMeta(root, l.root)
		}
		if err := apply(root, l.root, l); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i+1, err)
		}
		if err := resolveLowerLinks(root, l); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	// Links whose target a later layer replaced or removed own the old
	// inode now, as after extracting the layers onto a disk.
	tarimport.Relink(root)
	return root, nil
}

// apply merges the directory up (of layer l) into the directory dst.
func apply(dst, up *erofs.Node, l *layer) error {
	// Whiteouts first: they remove what the layers below have, never
	// what this layer itself adds.
	if up.Lookup(opaqueName) != nil {
		dst.Children = nil
	}
	for _, c := range up.Children {
		if name, ok := strings.CutPrefix(c.Name, whiteoutPrefix); ok && c.Name != opaqueName {
			if name == "" || name == "." || name == ".." {
				return fmt.Errorf("%s: whiteout names nothing", c.Path())
			}
			dst.RemoveChild(name)
		}
	}
	for _, c := range append([]*erofs.Node(nil), up.Children...) {
		if strings.HasPrefix(c.Name, whiteoutPrefix) {
			continue
		}
		old := dst.Lookup(c.Name)
		if old != nil && isDir(old) && isDir(c) {
			// A directory in both: its metadata comes from this layer
			// unless the layer only has it as the parent of its entries.
			if !l.implicit[c] {
				copyMeta(old, c)
			}
			if err := apply(old, c, l); err != nil {
				return err
			}
			continue
		}
		if old != nil {
			dst.RemoveChild(c.Name)
		}
		up.RemoveChild(c.Name)
		dropWhiteouts(c)
		if err := dst.AddChild(c); err != nil {
			return fmt.Errorf("%s: %w", c.Path(), err)
		}
	}
	return nil
}

func isDir(n *erofs.Node) bool { return n.LinkTo == nil && n.IsDir() }

// copyMeta gives dst the metadata of the directory src.
func copyMeta(dst, src *erofs.Node) {
	dst.Mode, dst.UID, dst.GID, dst.Mtime, dst.Xattrs = src.Mode, src.UID, src.GID, src.Mtime, src.Xattrs
}

// dropWhiteouts removes whiteout entries from a subtree new in the
// result: there is nothing below it for them to hide.
func dropWhiteouts(n *erofs.Node) {
	if !isDir(n) {
		return
	}
	kept := n.Children[:0]
	for _, c := range n.Children {
		if !strings.HasPrefix(c.Name, whiteoutPrefix) {
			kept = append(kept, c)
			dropWhiteouts(c)
		}
	}
	n.Children = kept
}

// resolveLowerLinks turns the layer's placeholders for hard links to
// lower-layer files into links, once the layer is applied.
func resolveLowerLinks(root *erofs.Node, l *layer) error {
	if len(l.lowerLinks) == 0 {
		return nil
	}
	var placeholders []*erofs.Node
	erofs.Walk(root, func(n *erofs.Node) error {
		if _, ok := l.lowerLinks[n]; ok {
			placeholders = append(placeholders, n)
		}
		return nil
	})
	for _, n := range placeholders {
		target := l.lowerLinks[n]
		t, err := erofs.Resolve(root, target)
		if err != nil {
			return fmt.Errorf("hard link %s: target %s is in no layer", n.Path(), target)
		}
		t = t.Target()
		if t.IsDir() || t == n {
			return fmt.Errorf("hard link %s: target %s is a directory or the link itself", n.Path(), target)
		}
		*n = erofs.Node{Name: n.Name, Parent: n.Parent, Mode: t.Mode, LinkTo: t}
		t.Nlink++
	}
	// A link of this layer to a placeholder now points at a link:
	// point it at the inode.
	erofs.Walk(root, func(n *erofs.Node) error {
		if n.LinkTo != nil && n.LinkTo.LinkTo != nil {
			n.LinkTo = n.LinkTo.LinkTo
		}
		return nil
	})
	return nil
}
