package repo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// TreeFS is a read-only io/fs view of a tree (usually a commit's), with
// file contents read from the image (inline content) or the repository's
// objects. It lets code written against fs.FS, such as the kernel module
// resolver, read a commit without mounting or checking it out.
//
// Symbolic links are followed inside the tree: an absolute target starts
// again at the tree's root, as it would once the tree is the root
// filesystem. Lstat and ReadLink (fs.ReadLinkFS) do not follow the last
// component. FileInfo.Sys returns the *erofs.Node holding the metadata
// (the target of a hard link).
//
// In an insecure repository the kernel does not check objects, so a
// regular file read from start to end is checked against its digest, and
// the read that completes it fails with a *verity.MismatchError if the
// content is not what the tree names.
type TreeFS struct {
	r    *Repo
	root *erofs.Node
}

// maxSymlinks bounds how many links one lookup follows (the kernel's
// limit), so a loop in a tree ends in an error.
const maxSymlinks = 40

// TreeFS returns a file system view of the tree at root, whose external
// files are objects of r.
func (r *Repo) TreeFS(root *erofs.Node) *TreeFS {
	return &TreeFS{r: r, root: root}
}

var (
	_ fs.ReadLinkFS = (*TreeFS)(nil)
	_ fs.ReadDirFS  = (*TreeFS)(nil)
	_ fs.ReadFileFS = (*TreeFS)(nil)
	_ fs.StatFS     = (*TreeFS)(nil)
)

// errNotDir is what a path through a non-directory gives, as on Linux.
var errNotDir = syscall.ENOTDIR

// lookup resolves name to its entry; follow says whether a symlink as the
// last component is followed.
func (t *TreeFS) lookup(op, name string, follow bool) (*erofs.Node, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	cur := t.root
	if name == "." {
		return cur, nil
	}
	comps := strings.Split(name, "/")
	links := 0
	for i := 0; i < len(comps); i++ {
		c := comps[i]
		switch c {
		case "", ".":
			continue
		case "..": // only from symlink targets; the root is its own parent
			if cur.Parent != nil {
				cur = cur.Parent
			}
			continue
		}
		if !cur.IsDir() {
			return nil, &fs.PathError{Op: op, Path: name, Err: errNotDir}
		}
		child := cur.Lookup(c)
		if child == nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		last := i == len(comps)-1
		if tgt := child.Target(); tgt.IsSymlink() && (follow || !last) {
			links++
			if links > maxSymlinks {
				return nil, &fs.PathError{Op: op, Path: name, Err: syscall.ELOOP}
			}
			if strings.HasPrefix(tgt.Payload, "/") {
				cur = t.root
			}
			// cur stays the directory holding the link for a relative
			// target.
			comps = append(strings.Split(tgt.Payload, "/"), comps[i+1:]...)
			i = -1
			continue
		}
		if !last && !child.Target().IsDir() {
			return nil, &fs.PathError{Op: op, Path: name, Err: errNotDir}
		}
		cur = child
	}
	return cur, nil
}

// Node returns the tree entry at name, following symlinks.
func (t *TreeFS) Node(name string) (*erofs.Node, error) {
	return t.lookup("lookup", name, true)
}

// Open opens the named file, following symlinks.
func (t *TreeFS) Open(name string) (fs.File, error) {
	n, err := t.lookup("open", name, true)
	if err != nil {
		return nil, err
	}
	info := nodeInfo{name: path.Base(name), n: n.Target()}
	switch {
	case info.n.IsDir():
		return &treeDir{info: info, fsys: t, dir: info.n}, nil
	case info.n.IsRegular():
		rd, err := t.r.openContent(info.n)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &treeFile{info: info, rd: rd}, nil
	}
	// Devices, fifos and sockets have no content in a tree.
	return &treeFile{info: info, rd: nopCloser{bytes.NewReader(nil)}}, nil
}

// Stat returns the metadata of the named file, following symlinks.
func (t *TreeFS) Stat(name string) (fs.FileInfo, error) {
	n, err := t.lookup("stat", name, true)
	if err != nil {
		return nil, err
	}
	return nodeInfo{name: path.Base(name), n: n.Target()}, nil
}

// Lstat is Stat without following a symlink in the last component.
func (t *TreeFS) Lstat(name string) (fs.FileInfo, error) {
	n, err := t.lookup("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return nodeInfo{name: path.Base(name), n: n.Target()}, nil
}

// ReadLink returns the target of the named symlink.
func (t *TreeFS) ReadLink(name string) (string, error) {
	n, err := t.lookup("readlink", name, false)
	if err != nil {
		return "", err
	}
	if !n.Target().IsSymlink() {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return n.Target().Payload, nil
}

// ReadDir lists the named directory, sorted by name.
func (t *TreeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := t.lookup("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if !n.Target().IsDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errNotDir}
	}
	return dirEntries(n.Target()), nil
}

// ReadFile returns the content of the named file.
func (t *TreeFS) ReadFile(name string) ([]byte, error) {
	f, err := t.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, ok := f.(*treeDir); ok {
		return nil, &fs.PathError{Op: "read", Path: name, Err: syscall.EISDIR}
	}
	st, _ := f.Stat()
	buf := bytes.NewBuffer(make([]byte, 0, int(st.Size())+1))
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// contentReader is what a regular file reads from.
type contentReader interface {
	io.Reader
	io.ReaderAt
	io.Seeker
	io.Closer
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// OpenContent opens the content of the regular file n (or of a hard
// link's target) to be read from start to end. In a secure repository an
// object is the file itself, whose every read the kernel checks; in an
// insecure one the reader hashes what it reads, and the read that
// completes the content fails with a *verity.MismatchError if it is not
// what the tree names.
func (r *Repo) OpenContent(n *erofs.Node) (io.ReadCloser, error) {
	t := n.Target()
	if !t.IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", n.Path())
	}
	rd, err := r.openContent(t)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Path(), err)
	}
	return rd, nil
}

// openContent opens the content of regular file n (a hard link's target).
func (r *Repo) openContent(n *erofs.Node) (contentReader, error) {
	if !n.IsExternal() {
		return nopCloser{bytes.NewReader(n.Content)}, nil
	}
	if n.Digest.IsZero() {
		return nil, errors.New("no digest recorded for the file's object")
	}
	d := n.Digest
	f, err := r.OpenObject(d)
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", d, err)
	}
	st, err := f.Stat()
	if err == nil && st.Size() != int64(n.Size) {
		err = fmt.Errorf("object %s has %d bytes, the tree says %d", d, st.Size(), n.Size)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	if r.Secure {
		return f, nil // the kernel checks every read
	}
	return &checkedObject{f: f, want: d, size: int64(n.Size), h: verity.NewHasher()}, nil
}

// checkedObject reads an object of an insecure repository. It hashes what
// sequential reads return and checks the digest when the last byte has
// been read; a seek elsewhere stops the check (h becomes nil), since the
// bytes would no longer be seen in order. The file is not embedded: its
// WriteTo would let io.Copy read past the check.
type checkedObject struct {
	f      *os.File
	want   verity.Digest
	size   int64
	h      *verity.Hasher
	hashed int64
}

func (o *checkedObject) Read(p []byte) (int, error) {
	n, err := o.f.Read(p)
	if o.h != nil && n > 0 {
		o.h.Write(p[:n])
		o.hashed += int64(n)
		if o.hashed >= o.size {
			got := o.h.Sum()
			o.h = nil
			if got != o.want {
				return n, &verity.MismatchError{Path: o.f.Name(), Want: o.want, Got: got}
			}
		}
	}
	return n, err
}

func (o *checkedObject) Seek(offset int64, whence int) (int64, error) {
	pos, err := o.f.Seek(offset, whence)
	if err == nil && pos != o.hashed {
		o.h = nil
	}
	return pos, err
}

func (o *checkedObject) ReadAt(p []byte, off int64) (int, error) { return o.f.ReadAt(p, off) }
func (o *checkedObject) Close() error                            { return o.f.Close() }

// treeFile is an open regular file (or a device, fifo or socket, which
// read as empty).
type treeFile struct {
	info nodeInfo
	rd   contentReader
}

func (f *treeFile) Stat() (fs.FileInfo, error)                { return f.info, nil }
func (f *treeFile) Read(p []byte) (int, error)                { return f.rd.Read(p) }
func (f *treeFile) ReadAt(p []byte, off int64) (int, error)   { return f.rd.ReadAt(p, off) }
func (f *treeFile) Seek(off int64, whence int) (int64, error) { return f.rd.Seek(off, whence) }
func (f *treeFile) Close() error                              { return f.rd.Close() }

// treeDir is an open directory.
type treeDir struct {
	info    nodeInfo
	fsys    *TreeFS
	dir     *erofs.Node
	entries []fs.DirEntry // nil until the first ReadDir
	pos     int
}

func (d *treeDir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *treeDir) Close() error               { return nil }
func (d *treeDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: syscall.EISDIR}
}

// ReadDir follows fs.ReadDirFile: n > 0 returns at most n entries and
// io.EOF at the end, n <= 0 returns the rest.
func (d *treeDir) ReadDir(n int) ([]fs.DirEntry, error) {
	if d.entries == nil {
		d.entries = dirEntries(d.dir)
	}
	rest := d.entries[d.pos:]
	if n <= 0 {
		d.pos = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(rest))
	d.pos += n
	return rest[:n], nil
}

func dirEntries(dir *erofs.Node) []fs.DirEntry {
	out := make([]fs.DirEntry, len(dir.Children))
	for i, c := range dir.Children {
		out[i] = fs.FileInfoToDirEntry(nodeInfo{name: c.Name, n: c.Target()})
	}
	return out
}

// nodeInfo is the fs.FileInfo of a tree entry.
type nodeInfo struct {
	name string
	n    *erofs.Node
}

func (i nodeInfo) Name() string       { return i.name }
func (i nodeInfo) Size() int64        { return int64(i.n.Size) }
func (i nodeInfo) Mode() fs.FileMode  { return FileMode(i.n.Mode) }
func (i nodeInfo) ModTime() time.Time { return time.Unix(i.n.Mtime.Sec, int64(i.n.Mtime.Nsec)) }
func (i nodeInfo) IsDir() bool        { return i.n.IsDir() }
func (i nodeInfo) Sys() any           { return i.n }

// FileMode converts a st_mode as a tree stores it into an fs.FileMode.
func FileMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch mode & erofs.ModeTypeMask {
	case erofs.ModeDir:
		m |= fs.ModeDir
	case erofs.ModeSymlink:
		m |= fs.ModeSymlink
	case erofs.ModeChr:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case erofs.ModeBlk:
		m |= fs.ModeDevice
	case erofs.ModeFifo:
		m |= fs.ModeNamedPipe
	case erofs.ModeSock:
		m |= fs.ModeSocket
	}
	return m
}
