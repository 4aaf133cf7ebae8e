package repo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// AddOptions control AddCommits.
type AddOptions struct {
	// Branch is moved to the first (newest) commit.
	Branch string
	// CheckOld makes AddCommits refuse to move the branch unless it still
	// points at Old (or, with Old zero, does not exist): the tip the
	// caller saw before it started fetching.
	CheckOld bool
	Old      verity.Digest
}

// ErrBranchMoved is returned by AddCommits when the branch changed while
// the caller was fetching.
var ErrBranchMoved = errors.New("branch moved while the commit was fetched")

// AddCommits makes commits whose records, images and objects the caller
// has already put into the object store (pull does, from a remote) part of
// the repository, and moves opts.Branch to the first of them. ids are
// newest first, each the parent of the one before. Everything is checked
// before anything is recorded: each record parses, each image parses and
// every object it and the commit's kernel record name is present (with
// fs-verity in a secure repository). The last commit's parent may be
// missing: the commit is then recorded as the start of a shallow history.
// The branch moves last, after one sync, so it never names a commit whose
// content is not all on disk.
func (r *Repo) AddCommits(ids []verity.Digest, opts AddOptions) error {
	if len(ids) == 0 {
		return errors.New("add commits: none given")
	}
	if err := r.canCommit(CommitOptions{Branch: opts.Branch}); err != nil {
		return err
	}
	unlock, err := r.lockBranch(opts.Branch)
	if err != nil {
		return err
	}
	defer unlock()
	if opts.CheckOld {
		cur, err := r.Branch(opts.Branch)
		switch {
		case errors.Is(err, ErrNoBranch):
			if opts.Old != (verity.Digest{}) {
				return fmt.Errorf("branch %s: %w (it was deleted)", opts.Branch, ErrBranchMoved)
			}
		case err != nil:
			return err
		case cur != opts.Old:
			return fmt.Errorf("branch %s: %w (now %s)", opts.Branch, ErrBranchMoved, cur)
		}
	}
	images := make([]verity.Digest, len(ids))
	var shallow []verity.Digest
	for i, id := range ids {
		c, err := r.ReadCommit(id)
		if err != nil {
			return err
		}
		p, hasParent := c.Parent, !c.Parent.IsZero()
		if i+1 < len(ids) && (!hasParent || p != ids[i+1]) {
			return fmt.Errorf("commit %s: parent is %q, not the next commit given (%s)", id, c.Parent, ids[i+1])
		}
		if i+1 == len(ids) && hasParent && !r.hasCommit(p) {
			shallow = append(shallow, id)
		}
		images[i] = c.Image
		img, err := r.ReadImage(images[i])
		if err != nil {
			return fmt.Errorf("commit %s: %w", id, err)
		}
		if err := r.CheckObjects(img.Root); err != nil {
			return fmt.Errorf("commit %s: image %s: %w", id, images[i], err)
		}
		for _, d := range c.BootObjects() {
			if !r.objects.Has(d) {
				return fmt.Errorf("commit %s: boot file object %s is missing", id, d)
			}
		}
	}
	if err := r.objects.Sync(); err != nil {
		return fmt.Errorf("sync repository: %w", err)
	}
	// Shallow marks go first: a crash after them leaves names of
	// commits that may not exist, which fsck accepts.
	if err := r.addShallow(shallow); err != nil {
		return err
	}
	for i := range ids {
		if err := r.indexLink(imagesDir, images[i]); err != nil {
			return err
		}
		if err := r.indexLink(commitsDir, ids[i]); err != nil {
			return err
		}
	}
	for _, d := range []string{imagesDir, commitsDir} {
		if err := atomicfile.SyncDir(filepath.Join(r.Path, d)); err != nil {
			return fmt.Errorf("sync repository: %w", err)
		}
	}
	return r.SetBranch(opts.Branch, ids[0])
}

// addShallow adds commits to the list of commits whose parents are not in
// the repository.
func (r *Repo) addShallow(ids []verity.Digest) error {
	if len(ids) == 0 {
		return nil
	}
	all := r.shallowCommits()
	for _, d := range ids {
		all[d] = true
	}
	lines := make([]string, 0, len(all))
	for d := range all {
		lines = append(lines, d.String())
	}
	sort.Strings(lines)
	if err := atomicfile.WriteFile(filepath.Join(r.Path, shallowFile), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("record shallow history: %w", err)
	}
	return nil
}

// CommitRoot commits a tree built by the caller (package oci flattens
// image layers into one), whose external files must already be objects of
// the repository. newObjects is how many of them the caller stored, for
// the commit's statistics.
func (r *Repo) CommitRoot(root *erofs.Node, newObjects int, opts CommitOptions) (*CommitResult, error) {
	if err := r.canCommit(opts); err != nil {
		return nil, err
	}
	unlock, err := r.lockBranch(opts.Branch)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return r.commitTree(root, opts, newObjects, false)
}

// Named images (images/refs/NAME -> ../<digest>, the composefs-rs
// convention) keep an image and its objects alive through gc without a
// commit. Package oci keeps the trees of image layers it has applied this
// way, so that a later pull need not download them again.

func (r *Repo) namedImagePath(name string) string {
	return filepath.Join(r.Path, imagesDir, "refs", filepath.FromSlash(name))
}

// AddNamedImage writes the image of root, indexes it and names it name
// (components like a branch name). Its objects must be in the repository.
func (r *Repo) AddNamedImage(name string, root *erofs.Node) (verity.Digest, error) {
	if err := r.writable(); err != nil {
		return verity.Digest{}, err
	}
	if err := ValidBranchName(name); err != nil {
		return verity.Digest{}, fmt.Errorf("image name: %w", err)
	}
	if err := r.CheckObjects(root); err != nil {
		return verity.Digest{}, fmt.Errorf("image %s: %w", name, err)
	}
	d, err := r.writeImage(root)
	if err != nil {
		return d, err
	}
	if err := r.objects.Sync(); err != nil {
		return d, fmt.Errorf("sync repository: %w", err)
	}
	if err := r.indexLink(imagesDir, d); err != nil {
		return d, err
	}
	p := r.namedImagePath(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return d, fmt.Errorf("name image %s: %w", name, err)
	}
	target := strings.Repeat("../", strings.Count(name, "/")+1) + d.String()
	tmp := filepath.Join(filepath.Dir(p), fmt.Sprintf(".%s.tmp-%d", filepath.Base(p), os.Getpid()))
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return d, fmt.Errorf("name image %s: %w", name, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return d, fmt.Errorf("name image %s: %w", name, err)
	}
	return d, atomicfile.SyncDir(filepath.Dir(p))
}

// NamedImage returns the image called name, or an error wrapping
// os.ErrNotExist.
func (r *Repo) NamedImage(name string) (verity.Digest, error) {
	if err := ValidBranchName(name); err != nil {
		return verity.Digest{}, fmt.Errorf("image name: %w", err)
	}
	target, err := os.Readlink(r.namedImagePath(name))
	if err != nil {
		return verity.Digest{}, fmt.Errorf("image %s: %w", name, err)
	}
	d, err := verity.ParseDigest(filepath.Base(target))
	if err != nil {
		return d, fmt.Errorf("image %s: %w", name, err)
	}
	return d, nil
}

// NamedImages lists the image names under prefix (a directory of names,
// "" for all).
func (r *Repo) NamedImages(prefix string) ([]string, error) {
	root := filepath.Join(r.Path, imagesDir, "refs")
	var out []string
	err := filepath.WalkDir(filepath.Join(root, filepath.FromSlash(prefix)), func(p string, d os.DirEntry, err error) error {
		if errors.Is(err, os.ErrNotExist) {
			return filepath.SkipDir
		}
		if err != nil {
			return err
		}
		if d.Type()&os.ModeSymlink != 0 && !isTempName(d.Name()) {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list image names: %w", err)
	}
	return out, nil
}

// DeleteNamedImage removes the name; gc then collects the image unless
// something else keeps it.
func (r *Repo) DeleteNamedImage(name string) error {
	if err := r.writable(); err != nil {
		return err
	}
	if err := ValidBranchName(name); err != nil {
		return fmt.Errorf("image name: %w", err)
	}
	p := r.namedImagePath(name)
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("delete image name %s: %w", name, err)
	}
	return atomicfile.SyncDir(filepath.Dir(p))
}
