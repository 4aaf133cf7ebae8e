package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Origin is a deployment's origin record (internal/sysroot's).
type Origin = sysroot.Origin

// ReadOrigin reads the origin record of the deployment directory dir.
func ReadOrigin(dir string) (*Origin, error) { return sysroot.ReadOrigin(dir) }

// StateDir is where the deployment of an image keeps its state.
func StateDir(root string, image verity.Digest) string {
	return filepath.Join(root, sysroot.DeploymentRel(image))
}

// VarDir is the /var of a stateroot.
func VarDir(root, stateroot string) string { return filepath.Join(root, sysroot.VarRel(stateroot)) }

// removeStaleTemps deletes what interrupted verbs left: directories being
// built or removed in the state directories, and temporary files in the
// boot directory. The caller holds the state lock, so no other verb is
// working on them. It returns how many it removed.
func (h *Host) removeStaleTemps() int {
	n := 0
	dirs := []string{h.Join(sysroot.DeployDir)}
	if roots, err := os.ReadDir(h.Join(sysroot.OSDir)); err == nil {
		for _, r := range roots {
			dirs = append(dirs, h.Join(sysroot.OSDir, r.Name()))
		}
	}
	for _, d := range dirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), sysroot.TempPrefix) && os.RemoveAll(filepath.Join(d, e.Name())) == nil {
				n++
			}
		}
	}
	// Temporary files of boot files, of our entries and of loader.conf
	// (the boot loader skips dot files, but they take space on a small
	// ESP).
	bootFiles := h.BootJoin(sysroot.BootFilesDir)
	for _, bd := range []string{bootFiles, h.Entries(), filepath.Dir(LoaderConfPath(h.Boot))} {
		ents, _ := os.ReadDir(bd)
		for _, e := range ents {
			name := e.Name()
			ours := bd == bootFiles || strings.HasPrefix(name, "."+sysroot.EntryIDPrefix) || strings.HasPrefix(name, ".loader.conf.")
			if ours && strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") && e.Type().IsRegular() && os.Remove(filepath.Join(bd, name)) == nil {
				n++
			}
		}
	}
	return n
}

// createDeployment creates the state directory of the deployment of img:
// the new image's /etc with merge's local changes applied (when there is
// a merge deployment), origin.json and the stateroot file. It is built
// under a temporary name and renamed into place.
func (h *Host) createDeployment(root *erofs.Node, img verity.Digest, o sysroot.Origin, merge *Deployment, u *undo) (string, *MergeReport, error) {
	dir := h.Deployment(img)
	if _, err := os.Lstat(dir); err == nil {
		// No entry names it (else the rollout would have found it): a
		// leftover of an undeploy or a crash, which cleanup would
		// remove. Its /etc is stale; start afresh.
		if err := h.discardState(img); err != nil {
			return dir, nil, err
		}
	}
	tmp, err := stagingDir(dir, img.String()[:12]+"-", u)
	if err != nil {
		return dir, nil, err
	}
	etc := filepath.Join(tmp, sysroot.EtcDir)
	if err := checkoutOrEmpty(h.Repo, treeNode(root, "/etc"), etc); err != nil {
		return dir, nil, fmt.Errorf("check out /etc: %w", err)
	}
	if err := checkpoint("checkout-etc"); err != nil {
		return dir, nil, err
	}
	var rep *MergeReport
	if merge != nil {
		if rep, err = h.mergeEtc(merge, etc); err != nil {
			return dir, nil, err
		}
	}
	data, err := o.Marshal()
	if err != nil {
		return dir, nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, sysroot.OriginFile), data, 0o644); err != nil {
		return dir, nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, sysroot.StaterootFile), []byte(o.Stateroot+"\n"), 0o644); err != nil {
		return dir, nil, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return dir, nil, err
	}
	if err := publish(tmp, dir); err != nil {
		return dir, nil, err
	}
	u.tree(dir)
	return dir, rep, nil
}

// discardState removes a deployment's state directory: renamed to a
// temporary name first, so that a crash in the middle leaves something
// the next writer recognises as a leftover, never half an /etc under the
// deployment's name.
func (h *Host) discardState(img verity.Digest) error {
	dir := h.Deployment(img)
	gone := filepath.Join(filepath.Dir(dir), fmt.Sprintf("%srm-%s-%d", sysroot.TempPrefix, img.String()[:12], time.Now().UnixNano()))
	if err := os.Rename(dir, gone); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove deployment state %s: %w", dir, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := checkpoint("state-renamed"); err != nil {
		return err
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("remove deployment state %s: %w", gone, err)
	}
	if h.Repo != nil {
		return h.Repo.RemoveImageRef(deployRef(img))
	}
	return nil
}

// ensureVar creates the stateroot's /var from the image's /var the first
// time; after that it belongs to the running systems and is left alone.
func (h *Host) ensureVar(root *erofs.Node, stateroot string, u *undo) (string, bool, error) {
	dir := h.Var(stateroot)
	if exists, err := existingDir(dir); exists || err != nil {
		return dir, false, err
	}
	tmp, err := stagingDir(dir, "var-", u)
	if err != nil {
		return dir, false, err
	}
	staged := filepath.Join(tmp, "var")
	if err := checkoutOrEmpty(h.Repo, treeNode(root, "/var"), staged); err != nil {
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
	tmp, err := os.MkdirTemp(parent, sysroot.TempPrefix+name)
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
