package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SystemInit is where a packaged cfs-init is installed.
const SystemInit = "/usr/lib/cfs-deploy/cfs-init"

// ErrNoInit means no cfs-init binary was found to build an initramfs with.
var ErrNoInit = errors.New("no cfs-init binary")

// FindInit returns the cfs-init binary to put into an initramfs: the one
// next to the running executable (a build tree, or a package that ships
// both side by side), else SystemInit.
func FindInit() (string, error) {
	var tried []string
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "cfs-init")
		if isRegular(p) {
			return p, nil
		}
		tried = append(tried, p)
	}
	if isRegular(SystemInit) {
		return SystemInit, nil
	}
	tried = append(tried, SystemInit)
	return "", fmt.Errorf("%w (looked for %v)", ErrNoInit, tried)
}

func isRegular(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
