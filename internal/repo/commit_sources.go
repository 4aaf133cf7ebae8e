package repo

import (
	"fmt"
	"io"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/fstree"
	"github.com/cfs-deploy/cfs-deploy/internal/tarimport"
)

// CommitDir commits the directory tree at dir. It stays on dir's
// filesystem, like tar --one-file-system: a mount point inside the tree is
// recorded as an empty directory. Hard links are kept.
func (r *Repo) CommitDir(dir string, opts CommitOptions) (*CommitResult, error) {
	if err := r.canCommit(opts); err != nil {
		return nil, err
	}
	unlock, err := r.lockBranch(opts.Branch)
	if err != nil {
		return nil, err
	}
	defer unlock()
	sopts := fstree.DefaultOptions()
	sopts.Hardlinks = true
	sopts.OneFileSystem = true
	sopts.Store = r.objects
	sopts.Progress = opts.Progress
	cache := r.loadFileCache()
	sopts.Cache = cache
	before := r.objects.Created()
	root, err := fstree.Scan(dir, sopts)
	if err != nil {
		return nil, err // the scanner's errors name the path
	}
	res, err := r.commitTree(root, opts, int(r.objects.Created()-before), true)
	if err != nil {
		return nil, err
	}
	// A cache that cannot be saved costs the next commit time, not
	// correctness.
	if err := cache.save(); err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("save file digest cache: %v", err))
	}
	return res, nil
}

// CommitDump commits a tree described in composefs-dump(5) format. Every
// object it references must already be in the repository.
func (r *Repo) CommitDump(in io.Reader, name string, opts CommitOptions) (*CommitResult, error) {
	if err := r.canCommit(opts); err != nil {
		return nil, err
	}
	root, err := erofs.ParseDump(in, erofs.DumpOptions{})
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", name, err)
	}
	unlock, err := r.lockBranch(opts.Branch)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return r.commitTree(root, opts, 0, false)
}

// CommitTar commits the tree in a tar stream (see package tarimport for the
// rules on paths and links). Contents are stored as they stream by.
func (r *Repo) CommitTar(in io.Reader, name string, opts CommitOptions) (*CommitResult, error) {
	if err := r.canCommit(opts); err != nil {
		return nil, err
	}
	res, err := tarimport.Import(in, r.objects, erofs.RecommendedInlineMax, opts.Progress)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", name, err)
	}
	unlock, err := r.lockBranch(opts.Branch)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return r.commitTree(res.Root, opts, res.NewObjects, true)
}

// canCommit refuses a commit before any work: the repository must be
// writable by this version and the branch name valid.
func (r *Repo) canCommit(opts CommitOptions) error {
	if err := r.writable(); err != nil {
		return err
	}
	return ValidBranchName(opts.Branch)
}
