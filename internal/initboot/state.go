package initboot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// deployment is where one deployment's state lives, relative to the
// physical root (the layout is internal/sysroot's).
type deployment struct {
	Dir       string // state/deploy/<digest>
	Etc       string // state/deploy/<digest>/etc
	StateRoot string
	Var       string // state/os/<stateroot>/var
}

// findDeployment looks up the state of the deployment of digest. It only
// reads, so that it can run while the image is still being verified. The
// root partition is not trusted: no component of the state paths may be
// a symbolic link, and state files are read without blocking on a FIFO or
// reading without bound.
func findDeployment(root string, digest verity.Digest, log *Log) (*deployment, error) {
	d := &deployment{Dir: sysroot.DeploymentRel(digest)}
	d.Etc = d.Dir + "/" + sysroot.EtcDir
	if err := needDir(root, d.Dir, "the deployment's state directory (its /etc and origin.json, which rollout creates)"); err != nil {
		return nil, err
	}
	if err := needDir(root, d.Etc, "the deployment's /etc"); err != nil {
		return nil, err
	}
	sr, err := readStateRoot(filepath.Join(root, d.Dir))
	if err != nil {
		return nil, err
	}
	if sr == "" {
		log.Debugf("%s names no stateroot, using %q", d.Dir, sysroot.DefaultStateroot)
		sr = sysroot.DefaultStateroot
	}
	d.StateRoot = sr
	d.Var = sysroot.VarRel(sr)
	return d, nil
}

// readStateRoot reads the deployment's stateroot: the stateroot file
// rollout writes, or for deployments made before it existed, the field in
// origin.json. "" when neither names one. A file that cannot be read or
// parsed is an error: guessing could give the deployment another OS's
// /var.
func readStateRoot(dir string) (string, error) {
	sr, err := sysroot.ReadStateroot(dir)
	if err != nil {
		return "", &bootError{msg: fmt.Sprintf("cannot read the deployment's stateroot: %v", errText(err)), err: err}
	}
	if sr != "" {
		return sr, nil
	}
	sr, err = sysroot.ReadOriginStateroot(dir)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", &bootError{msg: fmt.Sprintf("cannot read the deployment's origin record: %v", errText(err)), err: err}
	}
	return sr, nil
}

// prepareVar creates the /var of the deployment's OS on the OS's first
// boot.
func prepareVar(root string, d *deployment, log *Log) error {
	v := filepath.Join(root, d.Var)
	if _, err := os.Lstat(v); errors.Is(err, os.ErrNotExist) {
		if err := sysroot.CheckDirNoSymlinks(root, filepath.Dir(filepath.Dir(d.Var))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return &bootError{msg: fmt.Sprintf("the /var of OS %q: %v", d.StateRoot, errText(err)), err: err}
		}
		if err := os.MkdirAll(v, 0o755); err != nil {
			return &bootError{msg: fmt.Sprintf("cannot create %s, the /var of OS %q: %v", d.Var, d.StateRoot, errText(err)), err: err}
		}
		log.Printf("created %s, the /var of OS %q", d.Var, d.StateRoot)
	}
	return needDir(root, d.Var, fmt.Sprintf("the /var of OS %q", d.StateRoot))
}

// needDir checks that rel is a directory below root reached through no
// symbolic link.
func needDir(root, rel, what string) error {
	err := sysroot.CheckDirNoSymlinks(root, rel)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return &bootError{msg: fmt.Sprintf("%s is missing: %s does not exist on the root file system", what, rel), err: err}
	case err != nil:
		return &bootError{msg: fmt.Sprintf("%s: %v", what, errText(err)), err: err}
	}
	return nil
}

// bindState mounts the deployment's /etc and its OS's /var over the
// image's /etc and /var in newroot. Each source is opened with
// RESOLVE_NO_SYMLINKS below the physical root and mounted through that
// file descriptor, so a link planted after the checks cannot redirect it.
func bindState(root, newroot string, d *deployment) error {
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &bootError{msg: fmt.Sprintf("cannot open the physical root %s: %v", root, errText(err)), err: err}
	}
	defer unix.Close(rootFD)
	for _, b := range []struct{ src, dst string }{{d.Etc, "etc"}, {d.Var, "var"}} {
		dst := filepath.Join(newroot, b.dst)
		if fi, err := os.Stat(dst); err != nil || !fi.IsDir() {
			return &bootError{msg: fmt.Sprintf("the image has no /%s directory to mount %s on", b.dst, b.src)}
		}
		if err := bindNoSymlinks(rootFD, b.src, dst); err != nil {
			return &bootError{msg: fmt.Sprintf("cannot bind-mount %s on /%s: %v", b.src, b.dst, errText(err)), err: err}
		}
	}
	return nil
}

// bindNoSymlinks bind-mounts rel (below the directory dirFD) on dst,
// refusing a symbolic link anywhere on the way.
func bindNoSymlinks(dirFD int, rel, dst string) error {
	fd, err := unix.Openat2(dirFD, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ELOOP) {
		return fmt.Errorf("%s has a symbolic link in its path", rel)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", rel, err)
	}
	defer unix.Close(fd)
	// /proc/self/fd/N of an O_PATH descriptor names exactly the opened
	// directory; mount(2) follows it without resolving the path again.
	return unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), dst, "", unix.MS_BIND, "")
}
