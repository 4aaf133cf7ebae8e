package osprep

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// splitPath splits "a/b/c" into "a/b" and "c".
func splitPath(path string) (dir, name string) {
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return "", path
	}
	return path[:i], path[i+1:]
}

// lookup returns the entry at path ("a/b", relative to root) without
// following symlinks, or nil.
func lookup(root *erofs.Node, path string) *erofs.Node {
	n := root
	for _, name := range strings.Split(path, "/") {
		if name == "" {
			continue
		}
		if !n.Target().IsDir() {
			return nil
		}
		if n = n.Target().Lookup(name); n == nil {
			return nil
		}
	}
	return n
}

// mkdirAll returns the directory at path, creating it and its missing
// parents (0755, root). Something else in the way is an error: Prepare
// never follows symlinks, which could lead out of the places it means to
// write.
func (p *prep) mkdirAll(path string) (*erofs.Node, error) {
	n := p.root
	for _, name := range strings.Split(path, "/") {
		if name == "" {
			continue
		}
		c := n.Lookup(name)
		if c == nil {
			c = erofs.NewDirectory(name, 0o755)
			c.Mtime = p.stamp
			if err := n.AddChild(c); err != nil {
				return nil, fmt.Errorf("create %s/%s: %w", strings.TrimSuffix(n.Path(), "/"), name, err)
			}
		} else if !c.IsDir() {
			return nil, fmt.Errorf("%s is %s; want a directory", c.Path(), kind(c))
		}
		n = c
	}
	return n, nil
}

// addSymlink adds the link dir/name -> target.
func (p *prep) addSymlink(dir *erofs.Node, name, target string, mtime erofs.Timespec) error {
	l := &erofs.Node{Name: name, Mode: erofs.ModeSymlink | 0o777, Nlink: 1, Payload: target,
		Size: uint64(len(target)), Mtime: mtime}
	if err := dir.AddChild(l); err != nil {
		return fmt.Errorf("create link %s/%s: %w", strings.TrimSuffix(dir.Path(), "/"), name, err)
	}
	return nil
}

// moveTo moves n (with everything below it) to dest, which must not
// exist; its parents are created. Hard links into or out of the moved
// subtree stay links: they point at nodes, not paths.
func (p *prep) moveTo(n *erofs.Node, dest string) error {
	if c := lookup(p.root, dest); c != nil {
		return fmt.Errorf("cannot move it to /%s: that exists already", dest)
	}
	dir, name := splitPath(dest)
	parent, err := p.mkdirAll(dir)
	if err != nil {
		return err
	}
	n.Parent.RemoveChild(n.Name)
	n.Name = name
	if err := parent.AddChild(n); err != nil {
		return fmt.Errorf("move to /%s: %w", dest, err)
	}
	return nil
}

// readFile returns the content of the regular file n.
func (p *prep) readFile(n *erofs.Node) ([]byte, error) {
	return readContent(n, p.files)
}

// readContent returns the content of the regular file n, asking r only
// for content that is not inline.
func readContent(n *erofs.Node, r Reader) ([]byte, error) {
	t := n.Target()
	if !t.IsExternal() {
		return t.Content, nil
	}
	b, err := r.ReadContent(t, maxConfig)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", n.Path(), err)
	}
	return b, nil
}

// setContent gives the regular file n (all its hard links) new content,
// keeping its metadata.
func (p *prep) setContent(n *erofs.Node, data []byte) error {
	t := n.Target()
	t.Size = uint64(len(data))
	t.Content, t.Digest, t.Payload = nil, verity.Digest{}, ""
	switch {
	case len(data) == 0:
	case len(data) <= erofs.RecommendedInlineMax:
		t.Content = bytes.Clone(data)
	default:
		d, err := p.files.PutBytes(data)
		if err != nil {
			return fmt.Errorf("store the new content of %s: %w", n.Path(), err)
		}
		t.Digest, t.Payload = d, d.ObjectPath()
	}
	return nil
}

// writeFile makes path a regular file (root-owned, mode) with data. An
// existing regular file with that content and mode is left alone, so a
// prepared tree does not change; one with other content gets the new
// content and mode; anything else in the way is an error.
func (p *prep) writeFile(path string, mode uint32, data []byte) error {
	dir, name := splitPath(path)
	parent, err := p.mkdirAll(dir)
	if err != nil {
		return err
	}
	n := parent.Lookup(name)
	if n == nil {
		n = &erofs.Node{Name: name, Mode: erofs.ModeReg | mode, Nlink: 1, Mtime: p.stamp}
		if err := parent.AddChild(n); err != nil {
			return fmt.Errorf("create /%s: %w", path, err)
		}
		p.changed("/%s: written", path)
		return p.setContent(n, data)
	}
	if !n.Target().IsRegular() {
		return fmt.Errorf("/%s is %s; want a regular file", path, kind(n))
	}
	old, err := p.readFile(n)
	if err != nil {
		return err
	}
	t := n.Target()
	if bytes.Equal(old, data) && t.Mode == erofs.ModeReg|mode {
		return nil
	}
	t.Mode = erofs.ModeReg | mode
	t.Mtime = p.stamp
	p.changed("/%s: rewritten", path)
	return p.setContent(n, data)
}
