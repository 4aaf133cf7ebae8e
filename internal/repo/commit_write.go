package repo

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/crashpoint"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// CommitOptions describe a new commit.
type CommitOptions struct {
	Branch  string
	Subject string
	Version string
	Time    time.Time // zero: now
	// Progress, if set, gets (entries, bytes) while the source is read.
	Progress func(files, bytes int64)
	// OCI, if set, is recorded in the commit: the container image the
	// tree came from.
	OCI *OCISource
	// Sign, if set, is given the new commit's id and record and returns
	// the signature file to store beside it (see SetCommitSignatures). It
	// runs before the branch moves, so the branch never names an unsigned
	// commit that was meant to be signed.
	Sign func(id verity.Digest, record []byte) ([]byte, error)
	// Prepare, if set, transforms the tree after it has been read and
	// before it is checked and written (commit --prepare-os, package
	// osprep). The source is never touched: only the tree in memory. It
	// may store new content with Repo.PutBytes. Its warnings join the
	// result's.
	Prepare func(root *erofs.Node) (warnings []string, err error)
}

// CommitResult is what a commit produced.
type CommitResult struct {
	ID     verity.Digest
	Image  verity.Digest
	Commit *Commit
	// Warnings are problems that did not stop the commit.
	Warnings []string
}

// commitTree records root, whose external files must already be objects of
// the repository, as the new tip of opts.Branch. The caller holds the
// branch lock. stored says the caller has just stored (or found) every
// object itself, so they need not be looked up again.
func (r *Repo) commitTree(root *erofs.Node, opts CommitOptions, newObjects int, stored bool) (*CommitResult, error) {
	var warnings []string
	if opts.Prepare != nil {
		before := r.objects.Created()
		var err error
		if warnings, err = opts.Prepare(root); err != nil {
			return nil, err
		}
		newObjects += int(r.objects.Created() - before)
	}
	parent, err := r.Branch(opts.Branch)
	hasParent := err == nil
	if err != nil && !errors.Is(err, ErrNoBranch) {
		return nil, err
	}
	stats, err := r.checkTreeObjects(root, !stored)
	if err != nil {
		return nil, err
	}
	stats.NewObjects = newObjects
	crashpoint.Here("after-objects")
	img, err := r.writeImage(root)
	if err != nil {
		return nil, err
	}
	crashpoint.Here("mid-image")
	kernel, err := r.findKernel(root)
	if err != nil {
		return nil, err
	}
	t := opts.Time
	if t.IsZero() {
		t = time.Now()
	}
	c := &Commit{
		Time:    t.UTC().Truncate(time.Second),
		Subject: opts.Subject,
		Version: opts.Version,
		Branch:  opts.Branch,
		Image:   img,
		Kernel:  kernel,
		Stats:   stats,
		OCI:     opts.OCI,
	}
	if hasParent {
		c.Parent = parent
	}
	id, record, err := r.writeCommit(c)
	if err != nil {
		return nil, err
	}
	crashpoint.Here("after-record")
	// Everything the index links and the branch will reach must be on
	// disk before they are written: after a power cut, no link may name
	// an object whose content did not make it.
	if err := r.objects.Sync(); err != nil {
		return nil, fmt.Errorf("sync repository: %w", err)
	}
	if err := r.indexLink(imagesDir, img); err != nil {
		return nil, err
	}
	if err := r.indexLink(commitsDir, id); err != nil {
		return nil, err
	}
	for _, d := range []string{imagesDir, commitsDir} {
		if err := atomicfile.SyncDir(filepath.Join(r.Path, d)); err != nil {
			return nil, fmt.Errorf("sync repository: %w", err)
		}
	}
	if opts.Sign != nil {
		sig, err := opts.Sign(id, record)
		if err != nil {
			return nil, fmt.Errorf("sign commit %s: %w", id, err)
		}
		if err := r.SetCommitSignatures(id, sig); err != nil {
			return nil, err
		}
	}
	crashpoint.Here("before-branch")
	if err := r.SetBranch(opts.Branch, id); err != nil {
		return nil, err
	}
	crashpoint.Here("after-branch")
	return &CommitResult{ID: id, Image: img, Commit: c, Warnings: warnings}, nil
}

// CheckObjects makes sure every object root references is in the
// repository (with fs-verity, in a secure repository): what a deployment
// of the tree will open.
func (r *Repo) CheckObjects(root *erofs.Node) error {
	_, err := r.checkTreeObjects(root, true)
	return err
}

// checkTreeObjects counts root's objects and checks their names; with
// lookup it also makes sure every one is present in the repository with
// the size the tree gives it, so no commit can reference missing content
// or files that would read short (or past their content).
func (r *Repo) checkTreeObjects(root *erofs.Node, lookup bool) (Stats, error) {
	var st Stats
	seen := map[string]bool{}
	sizes := map[verity.Digest]int64{} // of the objects looked up
	var missing, wrongSize []string
	err := erofs.Walk(root, func(n *erofs.Node) error {
		st.Entries++
		if n.LinkTo != nil || !n.IsExternal() {
			return nil
		}
		if n.Digest.IsZero() {
			return fmt.Errorf("%s: external file without a digest", n.Path())
		}
		d := n.Digest
		if n.Payload != d.ObjectPath() {
			return fmt.Errorf("%s: payload %q does not name the object of its digest", n.Path(), n.Payload)
		}
		if lookup {
			// Every entry, not every object: two entries may claim
			// different sizes for one object.
			size, looked := sizes[d]
			if !looked {
				have, ok, err := r.objects.Size(d)
				if err != nil {
					return fmt.Errorf("%s: %w", n.Path(), err)
				}
				if size = have; !ok {
					size = -1 // missing
				}
				sizes[d] = size
			}
			switch {
			case size < 0:
				missing = append(missing, n.Path()+" ("+n.Payload+")")
				return nil
			case uint64(size) != n.Size:
				wrongSize = append(wrongSize, fmt.Sprintf("%s (%d bytes, its object %d bytes)", n.Path(), n.Size, size))
				return nil
			}
		}
		if seen[n.Payload] {
			return nil
		}
		seen[n.Payload] = true
		st.Objects++
		st.ContentBytes += int64(n.Size)
		switch {
		case !lookup:
		case r.Secure:
			// Objects placed by other tools may lack fs-verity, and
			// every read of them would fail under verity=require.
			if err := r.verifyObject(d); err != nil {
				return fmt.Errorf("%s: %w", n.Path(), err)
			}
		case r.verifyExisting:
			if err := r.objects.Verify(d); err != nil {
				return fmt.Errorf("%s: %w", n.Path(), err)
			}
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	if len(missing) > 0 {
		return st, fmt.Errorf("%d files reference objects missing from the repository, e.g. %v", len(missing), firstFew(missing))
	}
	if len(wrongSize) > 0 {
		return st, fmt.Errorf("%d files have another size than their objects, e.g. %v", len(wrongSize), firstFew(wrongSize))
	}
	return st, nil
}

// firstFew keeps error messages about many files short.
func firstFew(list []string) []string {
	if len(list) > 5 {
		return list[:5]
	}
	return list
}

// findKernel looks for /usr/lib/modules/<version>/vmlinuz (and
// initramfs.img) and records them by object digest. With several
// versions the highest sorting one wins.
func (r *Repo) findKernel(root *erofs.Node) (*Kernel, error) {
	mods, err := erofs.Resolve(root, "/usr/lib/modules")
	if err != nil || !mods.IsDir() {
		return nil, nil
	}
	var k *Kernel
	for _, v := range mods.Children {
		dir := v.Target()
		if !dir.IsDir() {
			continue
		}
		vmlinuz := dir.Lookup("vmlinuz")
		if vmlinuz == nil || !vmlinuz.Target().IsRegular() {
			continue
		}
		kd, err := r.fileObject(vmlinuz.Target())
		if err != nil {
			return nil, fmt.Errorf("kernel %s: %w", vmlinuz.Path(), err)
		}
		nk := &Kernel{Version: v.Name, Vmlinuz: kd}
		if initrd := dir.Lookup("initramfs.img"); initrd != nil && initrd.Target().IsRegular() {
			id, err := r.fileObject(initrd.Target())
			if err != nil {
				return nil, fmt.Errorf("initramfs %s: %w", initrd.Path(), err)
			}
			nk.Initramfs = id
		}
		if k == nil || bootcfg.CompareVersions(k.Version, nk.Version) < 0 {
			k = nk
		}
	}
	return k, nil
}

// fileObject returns the object holding a regular file's content, storing
// inline content as an object so boot files are always addressable.
func (r *Repo) fileObject(n *erofs.Node) (verity.Digest, error) {
	if n.Content != nil || n.Size == 0 {
		d, _, err := r.objects.PutBytes(n.Content)
		return d, err
	}
	if n.Digest.IsZero() {
		return verity.Digest{}, fmt.Errorf("no digest recorded")
	}
	return n.Digest, nil
}

// ReadFile returns a reader over a regular file of a tree: inline content
// or its object.
func (r *Repo) ReadFile(n *erofs.Node) (*os.File, []byte, error) {
	t := n.Target()
	if !t.IsRegular() {
		return nil, nil, fmt.Errorf("%s: not a regular file", n.Path())
	}
	if !t.IsExternal() {
		return nil, t.Content, nil
	}
	if t.Digest.IsZero() {
		return nil, nil, fmt.Errorf("%s: no digest recorded", n.Path())
	}
	d := t.Digest
	f, err := r.OpenObject(d)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: object %s: %w", n.Path(), d, err)
	}
	if !r.Secure {
		// Without fs-verity nothing checks reads: check the whole object
		// before handing out any of it.
		got, err := verity.DigestFile(f)
		if err == nil && got != d {
			err = &verity.MismatchError{Path: f.Name(), Want: d, Got: got}
		}
		if err == nil {
			_, err = f.Seek(0, io.SeekStart)
		}
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("%s: object %s: %w", n.Path(), d, err)
		}
	}
	return f, nil, nil
}

// verifyObject checks that an object carries fs-verity with the digest it
// is named by.
func (r *Repo) verifyObject(d verity.Digest) error {
	f, err := r.OpenObject(d)
	if err != nil {
		return fmt.Errorf("object %s: %w", d, err)
	}
	return f.Close()
}
