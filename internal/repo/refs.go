package repo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/filelock"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// ErrNoBranch is returned for a branch that does not exist.
var ErrNoBranch = errors.New("no such branch")

// ValidBranchName accepts names like "os/stable": components of letters,
// digits, '.', '_', '-', '+', not starting with '.' or '-' (a name that
// reads as an option is a mistake), separated by '/'.
func ValidBranchName(name string) error {
	if name == "" || len(name) > 200 {
		return fmt.Errorf("branch name %q: must be 1..200 bytes", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part[0] == '.' || part[0] == '-' || strings.HasSuffix(part, ".lock") {
			return fmt.Errorf("branch name %q: empty component, leading '.' or '-', or '.lock' suffix", name)
		}
		for _, c := range []byte(part) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
				c == '.' || c == '_' || c == '-' || c == '+'
			if !ok {
				return fmt.Errorf("branch name %q: byte %q not allowed", name, c)
			}
		}
	}
	return nil
}

func (r *Repo) branchPath(name string) string {
	return filepath.Join(r.Path, headsDir, filepath.FromSlash(name))
}

// Branch returns the tip commit of a branch.
func (r *Repo) Branch(name string) (verity.Digest, error) {
	if err := ValidBranchName(name); err != nil {
		return verity.Digest{}, err
	}
	data, err := os.ReadFile(r.branchPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return verity.Digest{}, fmt.Errorf("branch %s: %w", name, ErrNoBranch)
	}
	if err != nil {
		return verity.Digest{}, fmt.Errorf("read branch %s: %w", name, err)
	}
	d, err := verity.ParseDigest(strings.TrimSpace(string(data)))
	if err != nil {
		return verity.Digest{}, fmt.Errorf("branch %s: corrupt ref file %s: %w", name, r.branchPath(name), err)
	}
	return d, nil
}

// SetBranch points a branch at a commit, atomically and durably. The
// commit's image is named under images/refs/ first (see SetImageRef), so
// that composefs-rs's gc keeps it before the branch reaches it.
func (r *Repo) SetBranch(name string, commit verity.Digest) error {
	if err := r.writable(); err != nil {
		return err
	}
	if err := ValidBranchName(name); err != nil {
		return err
	}
	c, err := r.ReadCommit(commit)
	if err != nil {
		return fmt.Errorf("set branch %s: %w", name, err)
	}
	if err := r.SetImageRef(BranchImageRefPrefix+name, c.Image); err != nil {
		return fmt.Errorf("set branch %s: %w", name, err)
	}
	p := r.branchPath(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("set branch %s: %w", name, err)
	}
	return atomicfile.WriteFile(p, []byte(commit.String()+"\n"), 0o644)
}

// DeleteBranch removes a branch (its commits stay until gc).
func (r *Repo) DeleteBranch(name string) error {
	if err := r.writable(); err != nil {
		return err
	}
	if err := ValidBranchName(name); err != nil {
		return err
	}
	if err := os.Remove(r.branchPath(name)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("branch %s: %w", name, ErrNoBranch)
		}
		return err
	}
	if err := atomicfile.SyncDir(filepath.Dir(r.branchPath(name))); err != nil {
		return err
	}
	return r.RemoveImageRef(BranchImageRefPrefix + name)
}

// Branches lists branch names, sorted.
func (r *Repo) Branches() ([]string, error) {
	root := filepath.Join(r.Path, headsDir)
	var names []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
			rel, _ := filepath.Rel(root, p)
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list branches: %w", err)
	}
	sort.Strings(names)
	return names, nil
}

// lockBranch serialises commits to one branch: it blocks until no other
// commit to the branch runs. The returned func releases the lock.
func (r *Repo) lockBranch(name string) (func(), error) {
	unlock, err := filelock.Exclusive(filepath.Join(r.Path, locksDir, strings.ReplaceAll(name, "/", "%2f")))
	if err != nil {
		return nil, fmt.Errorf("branch %s: %w", name, err)
	}
	return unlock, nil
}
