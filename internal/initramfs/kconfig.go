package initramfs

import (
	"bufio"
	"bytes"
	"io/fs"
	"path"
	"slices"
)

// KernelConfigPaths are where distributions put the kernel's build
// configuration, relative to the tree's root: Debian and Ubuntu in /boot,
// Fedora and Arch beside the modules.
func KernelConfigPaths(kver string) []string {
	return []string{
		path.Join("boot", "config-"+kver),
		path.Join("usr/lib/modules", kver, "config"),
		path.Join("lib/modules", kver, "config"),
	}
}

// kernelConfigured reports whether the kernel's configuration in fsys sets
// option to y; false when the tree has no configuration.
func kernelConfigured(fsys fs.FS, kver, option string) bool {
	for _, p := range KernelConfigPaths(kver) {
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			continue
		}
		want := []byte(option + "=y")
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if bytes.Equal(bytes.TrimSpace(sc.Bytes()), want) {
				return true
			}
		}
		return false
	}
	return false
}

// trimForKernel drops from a default set what the kernel does not need:
// loop, when the kernel mounts EROFS straight from a file (Linux 6.12+
// with CONFIG_EROFS_FS_BACKED_BY_FILE), since cfs-init then never sets up
// a loop device. Without a configuration in the tree the set is kept.
func trimForKernel(fsys fs.FS, kver string, set []string) ([]string, []string) {
	if !slices.Contains(set, "loop") || !kernelConfigured(fsys, kver, "CONFIG_EROFS_FS_BACKED_BY_FILE") {
		return set, nil
	}
	set = slices.DeleteFunc(slices.Clone(set), func(m string) bool { return m == "loop" })
	return set, []string{"module loop: left out, the kernel mounts EROFS from a file (CONFIG_EROFS_FS_BACKED_BY_FILE=y)"}
}
