package deploy

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/etcmerge"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"golang.org/x/sys/unix"
)

// checkout writes the directory tree n to dest, which must not exist,
// with every entry's type, content, mode, owner, xattrs and mtime. Hard
// links within the tree stay hard links; a link whose target lies outside
// it becomes a copy. Directories get their metadata after their contents,
// so their mtimes are not disturbed by the files created in them.
func checkout(r *repo.Repo, n *erofs.Node, dest string) error {
	co := &checkouter{r: r, top: n, paths: map[*erofs.Node]string{}}
	if err := os.Mkdir(dest, 0o700); err != nil {
		return err
	}
	if err := co.fill(n, dest); err != nil {
		return err
	}
	for _, l := range co.links {
		if err := co.link(l.n, l.path); err != nil {
			return err
		}
	}
	// Children were appended after their parents: apply in reverse.
	for i := len(co.dirs) - 1; i >= 0; i-- {
		d := co.dirs[i]
		if err := setMeta(d.path, d.n); err != nil {
			return err
		}
	}
	return nil
}

type placed struct {
	n    *erofs.Node
	path string
}

type checkouter struct {
	r     *repo.Repo
	top   *erofs.Node
	paths map[*erofs.Node]string // inode node -> where it was written
	links []placed               // hard link entries, made once all targets exist
	dirs  []placed               // in creation order
}

func (co *checkouter) fill(dir *erofs.Node, path string) error {
	co.dirs = append(co.dirs, placed{dir, path})
	for _, c := range dir.Children {
		p := filepath.Join(path, c.Name)
		switch {
		case c.LinkTo != nil:
			co.links = append(co.links, placed{c, p})
		case c.IsDir():
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			if err := co.fill(c, p); err != nil {
				return err
			}
		default:
			if err := co.create(c, p); err != nil {
				return err
			}
			co.paths[c] = p
		}
	}
	return nil
}

// link makes a hard link entry: a link to the target's copy when the
// target was checked out here, else a copy of its own.
func (co *checkouter) link(n *erofs.Node, path string) error {
	if tp, ok := co.paths[n.LinkTo]; ok {
		if err := os.Link(tp, path); err != nil {
			return err
		}
		return nil
	}
	if err := co.create(n.LinkTo, path); err != nil {
		return err
	}
	co.paths[n.LinkTo] = path
	return nil
}

// create makes a non-directory entry with its metadata.
func (co *checkouter) create(n *erofs.Node, path string) error {
	switch n.Type() {
	case erofs.ModeReg:
		if err := co.writeFile(n, path); err != nil {
			return err
		}
	case erofs.ModeSymlink:
		if err := os.Symlink(n.Payload, path); err != nil {
			return err
		}
	case erofs.ModeChr, erofs.ModeBlk, erofs.ModeFifo, erofs.ModeSock:
		if err := unix.Mknod(path, n.Type()|0o600, int(n.Rdev)); err != nil {
			return &os.PathError{Op: "mknod", Path: path, Err: err}
		}
	default:
		return fmt.Errorf("%s: unknown file type %#o", n.Path(), n.Type())
	}
	return setMeta(path, n)
}

// writeFile copies a regular file's content, which Repo.OpenContent
// checks as it is read: by the kernel in a secure repository, while
// copying in an insecure one.
func (co *checkouter) writeFile(n *erofs.Node, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	src, err := co.r.OpenContent(n)
	if err != nil {
		return err
	}
	defer src.Close()
	// Plain reads and writes (the struct hides f's ReadFrom, which would
	// try copy_file_range or a reflink): every byte goes through a read
	// that is checked.
	copied, err := io.Copy(struct{ io.Writer }{f}, src)
	if err != nil {
		return fmt.Errorf("%s: copy %s: %w", path, n.Path(), err)
	}
	if copied != int64(n.Size) {
		return fmt.Errorf("%s: %s has %d bytes, the image says %d", path, n.Path(), copied, n.Size)
	}
	return f.Close()
}

// setMeta gives path n's owner, mode, xattrs and mtime: the same rules
// as the /etc merge, which writes the same kind of checkout.
var setMeta = etcmerge.SetMeta
