package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/mountinfo"

	"github.com/cfs-deploy/cfs-deploy/internal/blockdev"
	"golang.org/x/sys/unix"
)

// mountInfo is the line of /proc/self/mountinfo for one mount.
type mountInfo = mountinfo.Entry

// DetectRoot returns the root= value for the file system holding dir:
// UUID=<uuid> read from the superblock of its device. A UUID names the
// file system whatever the disk is called at boot, unlike /dev paths.
func DetectRoot(dir string) (string, error) {
	mi, err := mountOf(dir)
	if err != nil {
		return "", err
	}
	dev, err := mountDevice(mi)
	if err != nil {
		return "", fmt.Errorf("find the root device of %s (mounted at %s): %w", dir, mi.MountPoint, err)
	}
	fsys, err := blockdev.ProbeFile(dev)
	if err != nil {
		return "", fmt.Errorf("find the root device of %s: %w", dir, err)
	}
	if fsys.UUID == "" {
		return "", fmt.Errorf("find the root device of %s: the %s file system on %s has no UUID", dir, fsys.Type, dev)
	}
	return "UUID=" + fsys.UUID, nil
}

// mountOf returns the mount holding dir.
func mountOf(dir string) (mountInfo, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return mountInfo{}, fmt.Errorf("find the root device: stat %s: %w", dir, err)
	}
	mi, err := findMount("/proc/self/mountinfo", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err != nil {
		return mountInfo{}, fmt.Errorf("find the root device of %s: %w", dir, err)
	}
	return mi, nil
}

// mountDevice returns the block device node behind a mount. A real block
// device (major != 0) is found through sysfs, which knows its current
// name even when the mount table says /dev/root; btrfs mounts have an
// anonymous device number, so their source is used.
func mountDevice(mi mountInfo) (string, error) {
	if mi.Major != 0 {
		link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", mi.Major, mi.Minor))
		if err == nil {
			dev := "/dev/" + filepath.Base(link)
			if _, err := os.Stat(dev); err == nil {
				return dev, nil
			}
		}
	}
	if strings.HasPrefix(mi.Source, "/dev/") {
		if _, err := os.Stat(mi.Source); err == nil {
			return mi.Source, nil
		}
	}
	return "", fmt.Errorf("%s file system from %q is not on a block device cfs-deploy can probe", mi.FSType, mi.Source)
}

// findMount returns the mountinfo line of the mount with device number
// major:minor.
func findMount(path string, major, minor uint32) (mountInfo, error) {
	mounts, err := mountinfo.Read(path)
	if err != nil {
		return mountInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	for _, mi := range mounts {
		if mi.Major == major && mi.Minor == minor {
			return mi, nil
		}
	}
	return mountInfo{}, fmt.Errorf("no mount with device %d:%d in %s", major, minor, path)
}
