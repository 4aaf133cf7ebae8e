package initboot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/kmod/load"
	"golang.org/x/sys/unix"
)

// ModulesBase is where the initramfs keeps its modules, one directory per
// kernel release, each with a cfs-load.list in load order (written by the
// initramfs builder: crc32c before ext4, jbd2 and libcrc32c; the
// accelerated sha256 before anything uses fs-verity).
const ModulesBase = "/usr/lib/modules"

// loadModules loads the initramfs's modules for the running kernel. An
// initramfs without modules is fine (everything may be built in); modules
// that fail are reported and returned, and the boot goes on: a failure
// that matters shows up again, with a clearer cause, when its device or
// file system is missing.
func loadModules(base string, p *Plan, log *Log) error {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	kver := unix.ByteSliceToString(uts.Release[:])
	dir := filepath.Join(base, kver)
	list, err := load.ReadLoadList(filepath.Join(dir, load.ListFile))
	if errors.Is(err, os.ErrNotExist) {
		if others, _ := os.ReadDir(base); len(others) > 0 {
			names := make([]string, len(others))
			for i, e := range others {
				names[i] = e.Name()
			}
			log.Printf("warning: the initramfs has no modules for the running kernel %s (it has %v); it was built for another kernel", kver, names)
		} else {
			log.Debugf("no kernel modules in the initramfs")
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read module list: %w", err)
	}
	err = load.Load(dir, list, load.Options{
		Logf:   log.Debugf,
		Params: func(m string) string { return p.ModuleParams[m] },
	})
	if err != nil {
		log.Printf("some kernel modules failed to load: %v", err)
	}
	return err
}
