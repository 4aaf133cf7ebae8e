package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/filelock"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// OriginFile is the name of a deployment's origin record.
const OriginFile = "origin.json"

// Origin records where a deployment came from. It is written once, when
// the deployment's state directory is created.
type Origin struct {
	Commit    string    `json:"commit"`
	Branch    string    `json:"branch,omitempty"` // set when the rollout named a branch
	Stateroot string    `json:"stateroot"`
	Image     string    `json:"image"`
	Kernel    string    `json:"kernel_version"`
	Created   time.Time `json:"created"`
	Root      string    `json:"root"`
	Kargs     []string  `json:"kargs"` // the extra arguments asked for, not root=/rw/composefs=
}

// ReadOrigin reads the origin record of the deployment directory dir.
func ReadOrigin(dir string) (*Origin, error) {
	data, err := os.ReadFile(filepath.Join(dir, OriginFile))
	if err != nil {
		return nil, err
	}
	var o Origin
	if err := json.Unmarshal(data, &o); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, OriginFile), err)
	}
	return &o, nil
}

// StateDir is where the deployment of an image keeps its state.
func StateDir(sysroot string, image verity.Digest) string {
	return filepath.Join(sysroot, "state", "deploy", image.String())
}

// VarDir is the /var of a stateroot.
func VarDir(sysroot, stateroot string) string {
	return filepath.Join(sysroot, "state", "os", stateroot, "var")
}

// tempPrefix starts the names of directories being built; a crash leaves
// them behind, and the next rollout removes them.
const tempPrefix = ".tmp-"

func checkStateroot(name string) error {
	if name == "" || len(name) > 64 || name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("bad stateroot name %q", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("bad stateroot name %q: use letters, digits, '.', '_', '-'", name)
		}
	}
	return nil
}

// lockState serialises rollouts on a sysroot. The lock file lives in
// state/, outside state/deploy, which only holds deployments.
func lockState(sysroot string) (func(), error) {
	dir := filepath.Join(sysroot, "state")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return filelock.Exclusive(filepath.Join(dir, "lock"))
}

// removeStaleTemps deletes what interrupted rollouts left. The caller
// holds the state lock, so no other rollout is building them.
func removeStaleTemps(sysroot, bootDir string) {
	dirs := []string{filepath.Join(sysroot, "state", "deploy")}
	if roots, err := os.ReadDir(filepath.Join(sysroot, "state", "os")); err == nil {
		for _, r := range roots {
			dirs = append(dirs, filepath.Join(sysroot, "state", "os", r.Name()))
		}
	}
	for _, d := range dirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), tempPrefix) {
				os.RemoveAll(filepath.Join(d, e.Name()))
			}
		}
	}
	// Temporary files of boot files, of our entries and of loader.conf
	// (the boot loader skips dot files, but they take space on a small
	// ESP).
	for _, bd := range []string{filepath.Join(bootDir, bootSubdir), EntriesDir(bootDir), filepath.Dir(LoaderConfPath(bootDir))} {
		ents, _ := os.ReadDir(bd)
		for _, e := range ents {
			n := e.Name()
			ours := bd == filepath.Join(bootDir, bootSubdir) || strings.HasPrefix(n, "."+EntryPrefix) || strings.HasPrefix(n, ".loader.conf.")
			if ours && strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-") && e.Type().IsRegular() {
				os.Remove(filepath.Join(bd, n))
			}
		}
	}
}

// ensureDeployment creates <sysroot>/state/deploy/<image> with the
// image's /etc and the origin record, unless it exists: an existing
// deployment's /etc holds the admin's changes and is never replaced.
func ensureDeployment(r *repo.Repo, root *erofs.Node, sysroot string, img verity.Digest, o Origin, u *undo) (string, bool, error) {
	dir := StateDir(sysroot, img)
	if exists, err := existingDir(dir); exists || err != nil {
		if err != nil {
			return dir, false, err
		}
		// cfs-init binds the stateroot the origin names; a different one
		// asked for now would be reported but never used.
		prev, err := ReadOrigin(dir)
		if err != nil {
			return dir, false, fmt.Errorf("existing deployment: %w", err)
		}
		if prev.Stateroot != o.Stateroot {
			return dir, false, fmt.Errorf("image %s is already deployed with stateroot %q; it cannot also use %q", img, prev.Stateroot, o.Stateroot)
		}
		return dir, false, nil
	}
	tmp, err := stagingDir(dir, img.String()[:12]+"-", u)
	if err != nil {
		return dir, false, err
	}
	if err := checkoutOrEmpty(r, treeNode(root, "/etc"), filepath.Join(tmp, "etc")); err != nil {
		return dir, false, fmt.Errorf("check out /etc: %w", err)
	}
	data, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return dir, false, err
	}
	if err := os.WriteFile(filepath.Join(tmp, OriginFile), append(data, '\n'), 0o644); err != nil {
		return dir, false, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return dir, false, err
	}
	if err := publish(tmp, dir); err != nil {
		return dir, false, err
	}
	u.tree(dir)
	return dir, true, nil
}

// ensureVar creates the stateroot's /var from the image's /var the first
// time; after that it belongs to the running systems and is left alone.
func ensureVar(r *repo.Repo, root *erofs.Node, sysroot, stateroot string, u *undo) (string, bool, error) {
	dir := VarDir(sysroot, stateroot)
	if exists, err := existingDir(dir); exists || err != nil {
		return dir, false, err
	}
	tmp, err := stagingDir(dir, "var-", u)
	if err != nil {
		return dir, false, err
	}
	staged := filepath.Join(tmp, "var")
	if err := checkoutOrEmpty(r, treeNode(root, "/var"), staged); err != nil {
		return dir, false, fmt.Errorf("check out /var: %w", err)
	}
	if err := publish(staged, dir); err != nil {
		return dir, false, err
	}
	u.tree(dir)
	if err := os.Remove(tmp); err != nil {
		return dir, true, err
	}
	return dir, true, nil
}

// existingDir reports whether dir exists; anything but a directory there
// is an error, as is a failing lstat.
func existingDir(dir string) (bool, error) {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case !fi.IsDir():
		return false, fmt.Errorf("%s exists and is not a directory", dir)
	}
	return true, nil
}

// stagingDir makes the temporary directory in which dir is built, beside
// it so that publish can rename it into place, named with tempPrefix so
// that the next rollout removes it after a crash. If the rollout fails,
// u removes it and the parents made for it.
func stagingDir(dir, name string, u *undo) (string, error) {
	parent := filepath.Dir(dir)
	if err := mkdirAll(parent, 0o755, u); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(parent, tempPrefix+name)
	if err != nil {
		return "", err
	}
	u.tree(tmp)
	return tmp, nil
}

// publish moves a finished tree into place durably: one syncfs writes
// every file of it (cheaper than an fsync per file), then the rename makes
// it visible, then the directory holding it is synced.
func publish(tmp, dest string) error {
	if err := syncFS(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dest); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(dest))
}

// checkoutOrEmpty checks out n at dest, or makes an empty directory when
// the image has no such directory.
func checkoutOrEmpty(r *repo.Repo, n *erofs.Node, dest string) error {
	if n == nil {
		return os.Mkdir(dest, 0o755)
	}
	if !n.IsDir() {
		return fmt.Errorf("%s in the image is not a directory", n.Path())
	}
	return checkout(r, n, dest)
}
