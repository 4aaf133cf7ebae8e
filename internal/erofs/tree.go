package erofs

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Timespec is a file time as stored in an image: seconds since the epoch
// (negative allowed) and nanoseconds, stored verbatim.
type Timespec struct {
	Sec  int64
	Nsec uint32
}

// Less orders times by seconds, then nanoseconds.
func (t Timespec) Less(u Timespec) bool {
	if t.Sec != u.Sec {
		return t.Sec < u.Sec
	}
	return t.Nsec < u.Nsec
}

// Xattr is one extended attribute. Key is the full name ("user.foo").
type Xattr struct {
	Key   string
	Value string
}

// Node is one entry of the tree an image describes. It is the common model
// of the dump parser, the directory scanner, the writer and the reader.
type Node struct {
	Name  string // last path component; "" for the root
	Mode  uint32 // st_mode: file type and permission bits
	Nlink uint32 // ignored for directories: the writer recomputes it
	UID   uint32
	GID   uint32
	Rdev  uint64 // devices only
	Size  uint64
	Mtime Timespec

	// Payload is the symlink target of a symlink, or the path of the
	// backing object (relative to the object store, "xx/<62 hex>") of a
	// regular file whose content lives outside the image.
	Payload string
	// Content is the inline content of a small regular file, nil if none.
	Content []byte
	// Digest is the fs-verity digest of an external regular file's
	// content; the zero value means unknown.
	Digest verity.Digest
	Xattrs []Xattr

	// Children of a directory, sorted by Name in byte order. Never "." or
	// "..": the writer adds those.
	Children []*Node
	Parent   *Node
	// LinkTo is set on a hard link entry: the entry shares LinkTo's inode.
	// LinkTo is never itself a link.
	LinkTo *Node
}

// Errors the tree model reports; callers wrap them with the path.
var (
	ErrEmptyName    = errors.New("empty file name")
	ErrDotName      = errors.New(`file name is "." or ".."`)
	ErrNameTooLong  = errors.New("file name longer than 255 bytes")
	ErrNameSlash    = errors.New("file name contains '/'")
	ErrDuplicate    = errors.New("duplicate file name")
	ErrNotDirectory = errors.New("not a directory")
)

func (n *Node) Type() uint32    { return n.Mode & ModeTypeMask }
func (n *Node) IsDir() bool     { return n.Type() == ModeDir }
func (n *Node) IsRegular() bool { return n.Type() == ModeReg }
func (n *Node) IsSymlink() bool { return n.Type() == ModeSymlink }

// IsWhiteout reports whether n is an overlayfs whiteout: a character device
// with device number 0/0.
func (n *Node) IsWhiteout() bool { return n.Type() == ModeChr && uint32(n.Rdev) == 0 }

// IsExternal reports whether n is a regular file whose content lives in
// the object store rather than inline in the image.
func (n *Node) IsExternal() bool {
	return n.IsRegular() && n.Content == nil && n.Size > 0
}

// Target returns the inode n stands for: n itself, or what it links to.
func (n *Node) Target() *Node {
	if n.LinkTo != nil {
		return n.LinkTo
	}
	return n
}

// ValidName checks one path component.
func ValidName(name string) error {
	switch {
	case name == "":
		return ErrEmptyName
	case name == "." || name == "..":
		return ErrDotName
	case len(name) > MaxNameLen:
		return ErrNameTooLong
	case strings.IndexByte(name, '/') >= 0:
		return ErrNameSlash
	}
	return nil
}

// childIndex returns where name is or would be inserted in n.Children.
func (n *Node) childIndex(name string) (int, bool) {
	c := n.Children
	// Fast path: input usually arrives sorted, so the new name goes last.
	if len(c) == 0 || c[len(c)-1].Name < name {
		return len(c), false
	}
	i := sort.Search(len(c), func(i int) bool { return c[i].Name >= name })
	return i, i < len(c) && c[i].Name == name
}

// Lookup returns the child called name, or nil.
func (n *Node) Lookup(name string) *Node {
	if i, ok := n.childIndex(name); ok {
		return n.Children[i]
	}
	return nil
}

// AddChild inserts child under its Name, keeping Children sorted.
func (n *Node) AddChild(child *Node) error {
	if !n.IsDir() {
		return ErrNotDirectory
	}
	if err := ValidName(child.Name); err != nil {
		return err
	}
	i, exists := n.childIndex(child.Name)
	if exists {
		return ErrDuplicate
	}
	n.Children = append(n.Children, nil)
	copy(n.Children[i+1:], n.Children[i:])
	n.Children[i] = child
	child.Parent = n
	return nil
}

// RemoveChild removes the child called name; it reports whether it was there.
func (n *Node) RemoveChild(name string) bool {
	i, ok := n.childIndex(name)
	if !ok {
		return false
	}
	n.Children = append(n.Children[:i], n.Children[i+1:]...)
	return true
}

// Path returns the absolute path of n within its tree ("/" for the root).
func (n *Node) Path() string {
	if n.Parent == nil {
		return "/"
	}
	var parts []string
	for p := n; p.Parent != nil; p = p.Parent {
		parts = append(parts, p.Name)
	}
	var b strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteByte('/')
		b.WriteString(parts[i])
	}
	return b.String()
}

// Resolve walks an absolute or relative path from root ("/a/b", "a/b").
// Hard links are not followed; empty components are skipped.
func Resolve(root *Node, path string) (*Node, error) {
	n := root
	for _, name := range strings.Split(path, "/") {
		if name == "" {
			continue
		}
		if !n.IsDir() {
			return nil, fmt.Errorf("%s: %w", n.Path(), ErrNotDirectory)
		}
		c := n.Lookup(name)
		if c == nil {
			return nil, fmt.Errorf("%s/%s: no such file", strings.TrimSuffix(n.Path(), "/"), name)
		}
		n = c
	}
	return n, nil
}

// GetXattr returns the value of key and whether it is set.
func (n *Node) GetXattr(key string) (string, bool) {
	for _, x := range n.Xattrs {
		if x.Key == key {
			return x.Value, true
		}
	}
	return "", false
}

// SetXattr sets key to value, replacing an earlier value.
func (n *Node) SetXattr(key, value string) {
	for i := range n.Xattrs {
		if n.Xattrs[i].Key == key {
			n.Xattrs[i].Value = value
			return
		}
	}
	n.Xattrs = append(n.Xattrs, Xattr{key, value})
}

// Walk visits n and its descendants in depth-first pre-order with children
// in sorted order. Hard link entries are visited but not descended into.
func Walk(n *Node, fn func(*Node) error) error {
	if err := fn(n); err != nil {
		return err
	}
	if n.LinkTo != nil {
		return nil
	}
	for _, c := range n.Children {
		if err := Walk(c, fn); err != nil {
			return err
		}
	}
	return nil
}

// NewDirectory returns an empty directory node.
func NewDirectory(name string, mode uint32) *Node {
	return &Node{Name: name, Mode: ModeDir | mode&^ModeTypeMask, Nlink: 2}
}
