// Package fstree reads a directory tree from disk into the erofs.Node
// model, the way upstream `mkcomposefs SOURCE-DIR IMAGE` does, so that an
// image written from the result is byte-identical to mkcomposefs's
// (TestMatchesUpstream checks this against an upstream binary).
//
// What is taken from each entry (lstat, never following symlinks): mode,
// uid, gid, size, mtime with nanoseconds, rdev of devices, the target of
// symlinks and extended attributes. Like mkcomposefs, every non-directory
// gets nlink 1 and hard links are not detected unless Options.Hardlinks
// asks for it. Regular files up to Options.InlineMax bytes are read into
// the image; larger ones are referred to by the fs-verity digest of their
// content and can be copied into an object store on the way.
//
// Scan is parallel: directories are listed and files hashed by a pool of
// workers. The resulting tree does not depend on scheduling.
package fstree

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/objstore"
)

// Options controls Scan. The zero value records metadata only, with no
// inline content and no digests; DefaultOptions is what mkcomposefs does.
type Options struct {
	// UseEpoch sets every mtime to 0 (mkcomposefs --use-epoch).
	UseEpoch bool
	// SkipDevices leaves out character and block devices, overlayfs
	// whiteouts (0/0 character devices) included (--skip-devices). The
	// type comes from lstat; mkcomposefs looks at the directory entry's
	// type and so keeps devices on filesystems that do not report one.
	SkipDevices bool
	// SkipXattrs records no extended attributes (--skip-xattrs).
	SkipXattrs bool
	// UserXattrs records only user.* attributes (--user-xattrs). It
	// conflicts with SkipXattrs.
	UserXattrs bool
	// Hardlinks keeps hard links: entries that share an inode (same
	// device and inode number) become LinkTo entries of the first of them
	// in sorted depth-first order, whose Nlink is the number of its links
	// inside the tree. A link entry has only Name, Mode, Parent and
	// LinkTo set. Overlayfs whiteouts are never linked. Without it every
	// path is its own inode with nlink 1, as in mkcomposefs (which loses
	// hard links; composefs issue #444). Either way a file with several
	// links is read and hashed once.
	Hardlinks bool
	// InlineMax is the largest regular file whose content is stored in
	// the image itself (Node.Content); mkcomposefs uses 64
	// (erofs.RecommendedInlineMax). Empty files never have content. At
	// most erofs.MaxInlineContent.
	InlineMax int
	// ComputeDigests sets Node.Digest to the fs-verity digest of every
	// regular file larger than InlineMax and Node.Payload to the digest's
	// object path ("xx/<62 hex>"), as mkcomposefs does.
	ComputeDigests bool
	// Store, if set, receives a copy of every regular file larger than
	// InlineMax (mkcomposefs --digest-store). It implies ComputeDigests.
	// Scan does not sync the store: call Store.Sync before making the
	// objects reachable.
	Store *objstore.Store
	// Threads is the number of workers; 0 means GOMAXPROCS.
	Threads int
	// OneFileSystem does not descend into directories on another device
	// than the root (mount points, btrfs subvolumes), like `find -xdev`:
	// such a directory is recorded as an empty directory with the
	// metadata and xattrs lstat shows for it (those of the mounted
	// filesystem's root). Other entries are recorded whatever their
	// device; a bind-mounted file is just a file. mkcomposefs has no such
	// option and crosses mount points.
	OneFileSystem bool
	// Cache, if set, supplies the digests of files unchanged since an
	// earlier scan (same device, inode, size, mtime and ctime), which are
	// then not read at all when their object is already in Store, and
	// learns the digests of the files this scan reads.
	Cache DigestCache
	// Progress, if set, is called about ten times a second from one
	// goroutine with the number of entries recorded and the number of
	// bytes hashed so far, and once more at the end.
	Progress func(files, bytes int64)
}

// DefaultOptions returns what `mkcomposefs SOURCE-DIR` does: content of
// files up to 64 bytes inline, digests for the rest.
func DefaultOptions() Options {
	return Options{InlineMax: erofs.RecommendedInlineMax, ComputeDigests: true}
}

func (o *Options) check() error {
	switch {
	case o.SkipXattrs && o.UserXattrs:
		return errors.New("SkipXattrs and UserXattrs conflict")
	case o.InlineMax < 0 || o.InlineMax > erofs.MaxInlineContent:
		return fmt.Errorf("InlineMax %d out of range 0..%d", o.InlineMax, erofs.MaxInlineContent)
	case o.Threads < 0:
		return fmt.Errorf("negative Threads %d", o.Threads)
	}
	return nil
}

// Scan reads the tree at root (which must be a directory or a symlink to
// one) and returns its root node, named "". Any entry that cannot be read
// fails the whole scan with an error that names its path; nothing is
// skipped silently.
func Scan(root string, opts Options) (*erofs.Node, error) {
	if err := opts.check(); err != nil {
		return nil, fmt.Errorf("scan %s: %w", root, err)
	}
	if opts.Threads == 0 {
		opts.Threads = runtime.GOMAXPROCS(0)
	}
	s := newScanner(root, opts)
	n, err := s.run()
	if err != nil {
		return nil, err
	}
	return n, nil
}

// scanError names the path and the step that failed.
func scanError(path, op string, err error) error {
	return fmt.Errorf("scan %s: %s: %w", path, op, err)
}

// errChanged reports a file whose size changed between lstat and reading.
var errChanged = errors.New("file changed during scan")

func pathJoin(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}
