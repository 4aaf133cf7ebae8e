package repo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Image refs are composefs-rs's way of keeping an image: its garbage
// collector keeps exactly the images that symlinks under images/refs/
// name (images/refs/<name...> -> relative path to images/<hex>). A
// repository shared with composefs-rs tools therefore names every image
// cfs-deploy needs there: each branch tip's as cfs-deploy/heads/<branch>,
// and deployments' under names the deployment code chooses.
const (
	imageRefsDir = "images/refs"
	// BranchImageRefPrefix is where branch tips' images are named.
	BranchImageRefPrefix = "cfs-deploy/heads/"
)

// SetImageRef names image img under images/refs/name, replacing what the
// name held, atomically. name is a relative path of components like a
// branch name's ("cfs-deploy/deploy/<digest>"). The image must be in the
// repository.
func (r *Repo) SetImageRef(name string, img verity.Digest) error {
	if err := r.writable(); err != nil {
		return err
	}
	if err := ValidBranchName(name); err != nil {
		return fmt.Errorf("image ref: %w", err)
	}
	if !r.HasImage(img) {
		return fmt.Errorf("image ref %s: image %s: %w", name, img, os.ErrNotExist)
	}
	link := r.imageRefPath(name)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return fmt.Errorf("image ref %s: %w", name, err)
	}
	// From the link's directory up to images/: one level per component
	// of name (its directories and refs/ itself).
	target := strings.Repeat("../", strings.Count(name, "/")+1) + img.String()
	if err := replaceSymlink(link, target); err != nil {
		return fmt.Errorf("image ref %s: %w", name, err)
	}
	return atomicfile.SyncDir(filepath.Dir(link))
}

// RemoveImageRef removes the name images/refs/name; a name that does not
// exist is not an error.
func (r *Repo) RemoveImageRef(name string) error {
	if err := r.writable(); err != nil {
		return err
	}
	if err := ValidBranchName(name); err != nil {
		return fmt.Errorf("image ref: %w", err)
	}
	link := r.imageRefPath(name)
	if err := os.Remove(link); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove image ref %s: %w", name, err)
	}
	return atomicfile.SyncDir(filepath.Dir(link))
}

func (r *Repo) imageRefPath(name string) string {
	return filepath.Join(r.Path, imageRefsDir, filepath.FromSlash(name))
}

// ImageRefs lists the names under images/refs/ that start with prefix,
// and the image each names.
func (r *Repo) ImageRefs(prefix string) (map[string]verity.Digest, error) {
	all, err := r.imageRefs()
	if err != nil {
		return nil, err
	}
	for name := range all {
		if !strings.HasPrefix(name, prefix) {
			delete(all, name)
		}
	}
	return all, nil
}

// imageRefs lists the names under images/refs/ (relative, with '/') and
// the image each names, by the digest at the end of its target.
func (r *Repo) imageRefs() (map[string]verity.Digest, error) {
	root := filepath.Join(r.Path, imageRefsDir)
	out := map[string]verity.Digest{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, os.ErrNotExist) && p == root {
			return filepath.SkipDir
		}
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 || isTempName(d.Name()) {
			return nil
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		dg, err := verity.ParseDigest(filepath.Base(target))
		if err != nil {
			return fmt.Errorf("image ref %s points at %s, which is not an image digest", p, target)
		}
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = dg
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list image refs: %w", err)
	}
	return out, nil
}

// syncBranchImageRefs makes the refs under BranchImageRefPrefix name
// exactly the branch tips' images: repositories from before image refs,
// and refs a crash left behind, converge. tips maps branches to images.
func (r *Repo) syncBranchImageRefs(tips map[string]verity.Digest) error {
	refs, err := r.imageRefs()
	if err != nil {
		return err
	}
	for b, img := range tips {
		if refs[BranchImageRefPrefix+b] != img {
			if err := r.SetImageRef(BranchImageRefPrefix+b, img); err != nil {
				return err
			}
		}
	}
	for name := range refs {
		b, ok := strings.CutPrefix(name, BranchImageRefPrefix)
		if _, live := tips[b]; ok && !live {
			if err := r.RemoveImageRef(name); err != nil {
				return err
			}
		}
	}
	return nil
}

// replaceSymlink makes link a symlink to target, atomically: an existing
// link with that target is left alone; anything else under the name is
// replaced through a temporary link beside it (a dot name, which fsck
// counts and gc removes if a crash leaves it).
func replaceSymlink(link, target string) error {
	err := os.Symlink(target, link)
	if err == nil || !errors.Is(err, os.ErrExist) {
		return err
	}
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return nil
	}
	tmp := filepath.Join(filepath.Dir(link), fmt.Sprintf(".%s.tmp-%d-%d", filepath.Base(link), os.Getpid(), time.Now().UnixNano()))
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
