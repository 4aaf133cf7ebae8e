package initboot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// Deployment state on the physical root: each deployment's own /etc and
// origin record, and the /var its OS (stateroot) shares between
// deployments.
const (
	deployStateDir = "state/deploy"
	osStateDir     = "state/os"
	originFile     = "origin.json"
)

// deployment is where one deployment's state lives, relative to the
// physical root.
type deployment struct {
	Dir       string // state/deploy/<digest>
	Etc       string // state/deploy/<digest>/etc
	StateRoot string
	Var       string // state/os/<stateroot>/var
}

// findDeployment looks up the state of the deployment of digest. It only
// reads, so that it can run while the image is still being verified.
func findDeployment(sysroot string, digest verity.Digest, log *Log) (*deployment, error) {
	d := &deployment{Dir: filepath.Join(deployStateDir, digest.String())}
	d.Etc = filepath.Join(d.Dir, "etc")
	if err := needDir(sysroot, d.Dir, "the deployment's state directory (its /etc and origin.json, which rollout creates)"); err != nil {
		return nil, err
	}
	if err := needDir(sysroot, d.Etc, "the deployment's /etc"); err != nil {
		return nil, err
	}
	sr, err := readStateRoot(filepath.Join(sysroot, d.Dir, originFile))
	if err != nil {
		return nil, err
	}
	if sr == "" {
		log.Debugf("%s names no stateroot, using %q", filepath.Join(d.Dir, originFile), defaultStateRoot)
		sr = defaultStateRoot
	}
	d.StateRoot = sr
	d.Var = filepath.Join(osStateDir, sr, "var")
	return d, nil
}

// prepareVar creates the /var of the deployment's OS on the OS's first
// boot.
func prepareVar(sysroot string, d *deployment, log *Log) error {
	v := filepath.Join(sysroot, d.Var)
	if _, err := os.Stat(v); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(v, 0o755); err != nil {
			return &bootError{msg: fmt.Sprintf("cannot create %s, the /var of OS %q: %v", d.Var, d.StateRoot, errText(err)), err: err}
		}
		log.Printf("created %s, the /var of OS %q", d.Var, d.StateRoot)
	}
	return needDir(sysroot, d.Var, fmt.Sprintf("the /var of OS %q", d.StateRoot))
}

func needDir(sysroot, rel, what string) error {
	fi, err := os.Stat(filepath.Join(sysroot, rel))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return &bootError{msg: fmt.Sprintf("%s is missing: %s does not exist on the root file system", what, rel), err: err}
	case err != nil:
		return &bootError{msg: fmt.Sprintf("%s: %v", what, err), err: err}
	case !fi.IsDir():
		return &bootError{msg: fmt.Sprintf("%s: %s is not a directory", what, rel)}
	}
	return nil
}

// readStateRoot reads the stateroot name from a deployment's origin.json;
// "" when the file or the field is absent. A file that cannot be read or
// parsed is an error: guessing could give the deployment another OS's
// /var.
func readStateRoot(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", &bootError{msg: fmt.Sprintf("cannot read %s: %v", path, err), err: err}
	}
	sr, _, err := jsonObjectString(b, "stateroot")
	if err != nil {
		return "", &bootError{msg: fmt.Sprintf("%s is not valid: %v", path, err), err: err}
	}
	if sr != "" && (sr == "." || sr == ".." || strings.ContainsAny(sr, "/\x00")) {
		return "", &bootError{msg: fmt.Sprintf("%s: stateroot %q is not a usable directory name", path, sr)}
	}
	return sr, nil
}

// bindState mounts the deployment's /etc and its OS's /var over the
// image's /etc and /var in newroot.
func bindState(sysroot, newroot string, d *deployment) error {
	for _, b := range []struct{ src, dst string }{{d.Etc, "etc"}, {d.Var, "var"}} {
		dst := filepath.Join(newroot, b.dst)
		if fi, err := os.Stat(dst); err != nil || !fi.IsDir() {
			return &bootError{msg: fmt.Sprintf("the image has no /%s directory to mount %s on", b.dst, b.src)}
		}
		src := filepath.Join(sysroot, b.src)
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return &bootError{msg: fmt.Sprintf("cannot bind-mount %s on /%s: %v", b.src, b.dst, errText(err)), err: err}
		}
	}
	return nil
}
