// Package tarimport turns a tar stream (as podman export, docker export or
// tar --xattrs write it) into a composefs tree, storing file contents in an
// object store as it goes.
//
// Rules: paths are taken relative to the root ("./a", "/a" and "a" are the
// same entry); a path with a ".." component, or a hard link whose target
// does, is refused; symlink targets are stored as they are, absolute ones
// included, because they are resolved inside the deployed root. A later
// entry for the same path replaces the earlier one, as extraction would.
// Missing parent directories are created with mode 0755.
package tarimport

import (
	"archive/tar"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/objstore"
	"golang.org/x/sys/unix"
)

// ErrEscapes refuses paths that would leave the root.
var ErrEscapes = errors.New("path escapes the root")

// Result is the imported tree and what storing it did.
type Result struct {
	Root       *erofs.Node
	Entries    int
	NewObjects int
	Bytes      int64
	// With Options.Layer: the directories that had no entry of their own
	// (created for the entries below them; the root too, if it had none),
	// whose metadata a layer must not impose on the directory below it,
	Implicit map[*erofs.Node]bool
	// and hard links whose target is not in this stream, by the target's
	// path: placeholders (empty regular files) the caller resolves
	// against the layers below.
	LowerLinks map[*erofs.Node]string
}

// Options control ImportWith.
type Options struct {
	// InlineMax: files larger than this are stored as objects.
	InlineMax int
	// Progress, if set, is called after each entry.
	Progress func(files, bytes int64)
	// Layer reads the stream as a container image layer, one of several
	// applied in order: see Result.Implicit and Result.LowerLinks.
	Layer bool
}

// Import reads the whole tar stream. Files larger than inlineMax bytes are
// stored in st. Progress, if set, is called after each entry.
func Import(r io.Reader, st *objstore.Store, inlineMax int, progress func(files, bytes int64)) (*Result, error) {
	return ImportWith(r, st, Options{InlineMax: inlineMax, Progress: progress})
}

// ImportWith reads the whole tar stream as opts say.
func ImportWith(r io.Reader, st *objstore.Store, opts Options) (*Result, error) {
	progress := opts.Progress
	imp := &importer{st: st, inlineMax: opts.InlineMax, layer: opts.Layer,
		res: &Result{Root: erofs.NewDirectory("", 0o755)}}
	if opts.Layer {
		imp.res.Implicit = map[*erofs.Node]bool{imp.res.Root: true}
		imp.res.LowerLinks = map[*erofs.Node]string{}
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("tar: after %d entries: %w", imp.res.Entries, err)
		}
		if err := imp.add(hdr, tr); err != nil {
			return nil, fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
		imp.res.Entries++
		if progress != nil {
			progress(int64(imp.res.Entries), imp.res.Bytes)
		}
	}
	Relink(imp.res.Root)
	return imp.res, nil
}

// Relink repairs hard links after entries were replaced. A link whose
// target was replaced or removed by a later entry becomes the owner of the
// old inode, as on disk after extraction (further links to that inode
// follow it), and every file's nlink is recounted from the links that are
// still in the tree.
func Relink(root *erofs.Node) {
	inTree := map[*erofs.Node]bool{}
	var links []*erofs.Node
	erofs.Walk(root, func(n *erofs.Node) error {
		if n.LinkTo != nil {
			links = append(links, n)
		} else {
			inTree[n] = true
		}
		return nil
	})
	moved := map[*erofs.Node]*erofs.Node{}
	for _, l := range links {
		t := l.LinkTo
		if inTree[t] {
			continue
		}
		if owner := moved[t]; owner != nil {
			l.LinkTo = owner
			continue
		}
		name, parent := l.Name, l.Parent
		*l = *t
		l.Name, l.Parent, l.LinkTo, l.Children = name, parent, nil, nil
		moved[t] = l
		inTree[l] = true
	}
	for n := range inTree {
		if !n.IsDir() {
			n.Nlink = 1
		}
	}
	for _, l := range links {
		if l.LinkTo != nil {
			l.LinkTo.Nlink++
		}
	}
}

type importer struct {
	st        *objstore.Store
	inlineMax int
	layer     bool
	res       *Result
}

// cleanPath returns the components of a tar path, refusing "..".
func cleanPath(name string) ([]string, error) {
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return nil, ErrEscapes
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// dir returns the directory for parts, creating missing ones.
func (imp *importer) dir(parts []string) (*erofs.Node, error) {
	n := imp.res.Root
	for _, p := range parts {
		c := n.Lookup(p)
		if c == nil {
			c = erofs.NewDirectory(p, 0o755)
			c.Mtime = n.Mtime
			if err := n.AddChild(c); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if imp.layer {
				imp.res.Implicit[c] = true
			}
		}
		if c.LinkTo != nil || !c.IsDir() {
			return nil, fmt.Errorf("%s: %w", c.Path(), erofs.ErrNotDirectory)
		}
		n = c
	}
	return n, nil
}

func (imp *importer) add(hdr *tar.Header, body io.Reader) error {
	parts, err := cleanPath(hdr.Name)
	if err != nil {
		return err
	}
	var n *erofs.Node
	if len(parts) == 0 {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("the root must be a directory")
		}
		n = imp.res.Root
	} else {
		parent, err := imp.dir(parts[:len(parts)-1])
		if err != nil {
			return err
		}
		name := parts[len(parts)-1]
		if err := erofs.ValidName(name); err != nil {
			return err
		}
		old := parent.Lookup(name)
		if old != nil && !(old.IsDir() && old.LinkTo == nil && hdr.Typeflag == tar.TypeDir) {
			parent.RemoveChild(name)
			old = nil
		}
		if old != nil {
			n = old
		} else {
			n = &erofs.Node{Name: name}
			defer func() {
				if n.Mode != 0 && parent.Lookup(name) == nil {
					parent.AddChild(n)
				}
			}()
		}
	}
	perm := uint32(hdr.Mode) & 0o7777
	n.UID, n.GID = uint32(hdr.Uid), uint32(hdr.Gid)
	n.Mtime = erofs.Timespec{Sec: hdr.ModTime.Unix(), Nsec: uint32(hdr.ModTime.Nanosecond())}
	n.Nlink = 1
	n.Xattrs = xattrsOf(hdr)
	switch hdr.Typeflag {
	case tar.TypeDir:
		n.Mode = erofs.ModeDir | perm
		n.Nlink = 2
		if imp.layer {
			delete(imp.res.Implicit, n)
		}
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		n.Mode = erofs.ModeReg | perm
		return imp.content(n, hdr.Size, body)
	case tar.TypeSymlink:
		if hdr.Linkname == "" || len(hdr.Linkname) > erofs.MaxSymlinkLen {
			return erofs.ErrBadSymlink
		}
		// Linux symlinks are always 0777, whatever the archive says; an
		// extracted tree has them so.
		n.Mode = erofs.ModeSymlink | 0o777
		n.Payload = hdr.Linkname
		n.Size = uint64(len(hdr.Linkname))
	case tar.TypeLink:
		tparts, err := cleanPath(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
		}
		t, err := erofs.Resolve(imp.res.Root, strings.Join(tparts, "/"))
		if err != nil && imp.layer && len(tparts) > 0 {
			// A link to a file of a lower layer.
			*n = erofs.Node{Name: n.Name, Mode: erofs.ModeReg, Nlink: 1}
			imp.res.LowerLinks[n] = strings.Join(tparts, "/")
			return nil
		}
		if err != nil {
			return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
		}
		t = t.Target()
		if t.IsDir() || t == n {
			return fmt.Errorf("hard link target %q: is a directory or the link itself", hdr.Linkname)
		}
		*n = erofs.Node{Name: n.Name, Mode: t.Mode, LinkTo: t}
		t.Nlink++
	case tar.TypeChar:
		n.Mode = erofs.ModeChr | perm
		n.Rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeBlock:
		n.Mode = erofs.ModeBlk | perm
		n.Rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeFifo:
		n.Mode = erofs.ModeFifo | perm
	default:
		return fmt.Errorf("unsupported tar entry type %q", string(hdr.Typeflag))
	}
	return nil
}

// content stores a regular file: inline when small, else as an object,
// hashed as it is written.
func (imp *importer) content(n *erofs.Node, size int64, body io.Reader) error {
	n.Size = uint64(size)
	if size == 0 {
		return nil
	}
	if size <= int64(imp.inlineMax) {
		buf := make([]byte, size)
		if _, err := io.ReadFull(body, buf); err != nil {
			return fmt.Errorf("read content: %w", err)
		}
		n.Content = buf
		return nil
	}
	d, created, err := imp.st.PutReader(body, size)
	if err != nil {
		return err
	}
	if created {
		imp.res.NewObjects++
	}
	imp.res.Bytes += size
	n.Digest = d
	n.Payload = d.ObjectPath()
	return nil
}

// xattrsOf reads extended attributes from PAX records in the two common
// spellings: GNU tar/podman ("SCHILY.xattr.NAME", raw value; GNU tar writes
// '%' and '=' in NAME as %25 and %3D) and libarchive
// ("LIBARCHIVE.xattr.NAME", base64 value, URL-encoded name).
func xattrsOf(hdr *tar.Header) []erofs.Xattr {
	// Both spellings may name the same attribute; GNU's is preferred. The
	// PAX records are a map, so the choice must not depend on its order.
	byKey := map[string]string{}
	for k, v := range hdr.PAXRecords {
		if key, ok := strings.CutPrefix(k, "LIBARCHIVE.xattr."); ok {
			if val, err := base64.StdEncoding.DecodeString(v); err == nil {
				key = unescapeURL(key)
				if _, gnu := hdr.PAXRecords["SCHILY.xattr."+key]; !gnu {
					byKey[key] = string(val)
				}
			}
		}
	}
	for k, v := range hdr.PAXRecords {
		if key, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			byKey[gnuXattrName.Replace(key)] = v
		}
	}
	out := make([]erofs.Xattr, 0, len(byKey))
	for k, v := range byKey {
		out = append(out, erofs.Xattr{Key: k, Value: v})
	}
	slices.SortFunc(out, func(a, b erofs.Xattr) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// gnuXattrName undoes GNU tar's escaping of xattr names: only these two,
// so that a literal "%41" (written as %2541) stays as it is.
var gnuXattrName = strings.NewReplacer("%25", "%", "%3D", "=")

func unescapeURL(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}
