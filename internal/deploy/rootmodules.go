package deploy

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cfs-deploy/cfs-deploy/internal/blockdev"
	"github.com/cfs-deploy/cfs-deploy/internal/initramfs"
)

// sysfsRoot is where sysfs is mounted.
const sysfsRoot = "/sys"

// moduleAdvice ends every warning about the module set.
const moduleAdvice = "--module NAME adds a module (e.g. --module nvme for an NVMe disk), --modules LIST or [deploy] modules replaces the set"

// DefaultModules returns the default module set of an initramfs built
// for the physical root mounted at sysroot (see leanRoot), what it is for
// ("ext4 root on vda (virtio_blk, virtio_pci)"), and warnings about what
// could not be found. rootSpec is the root= the image boots with ("":
// the sysroot's file system).
func DefaultModules(sysroot, rootSpec string) (mods []string, what string, warnings []string) {
	r, what, warnings := leanRoot(sysroot, rootSpec)
	return initramfs.LeanModules(r), what, warnings
}

// leanRoot finds what the default initramfs module set depends on: the
// file system type of the mount holding dir (the sysroot, which is the
// physical root the image boots from) and the drivers of the disk under
// it, from sysfs. What cannot be found is said in a warning, and
// initramfs.LeanModules covers it with the broad set's part.
func leanRoot(dir, rootSpec string) (initramfs.Root, string, []string) {
	mi, err := mountOf(dir)
	if err != nil {
		return initramfs.Root{}, "unknown root", []string{fmt.Sprintf("initramfs: %v: it gets the broad default module set; %s", err, moduleAdvice)}
	}
	major, minor := mi.Major, mi.Minor
	if major == 0 && strings.HasPrefix(mi.Source, "/dev/") {
		// btrfs mounts have an anonymous device number; the source
		// names the device.
		var st unix.Stat_t
		if unix.Stat(mi.Source, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			major, minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
		}
	}
	dev, devErr := blockdev.Device{}, fmt.Errorf("%s is not a block device", mi.Source)
	if major != 0 {
		dev, devErr = blockdev.SysfsDevice(sysfsRoot, major, minor)
	}
	var uuid string
	if devErr == nil && strings.HasPrefix(rootSpec, "UUID=") {
		if fsys, err := blockdev.ProbeFile("/dev/" + dev.Name); err == nil {
			uuid = fsys.UUID
		}
	}
	return rootFromMount(dir, mi.FSType, uuid, rootSpec, dev, devErr)
}

// rootFromMount decides from the sysroot's file system type, its UUID
// ("" if not known), the root= the image boots with and the sysroot's
// device what the default module set is for, and describes it.
func rootFromMount(dir, fsType, uuid, rootSpec string, dev blockdev.Device, devErr error) (r initramfs.Root, what string, warnings []string) {
	if _, ok := initramfs.RootFSModule(fsType); !ok {
		return r, "unknown root", []string{fmt.Sprintf("initramfs: sysroot %s is on a %s file system, which cfs-init does not mount as the root: the initramfs gets the broad default module set; %s", dir, fsType, moduleAdvice)}
	}
	if want, ok := strings.CutPrefix(rootSpec, "UUID="); ok && uuid != "" && !strings.EqualFold(want, uuid) {
		// The entry boots another file system than the one the
		// sysroot is on: nothing here says what that one needs.
		return r, "unknown root", []string{fmt.Sprintf("initramfs: root=%s is not the file system of sysroot %s (UUID=%s): the initramfs gets the broad default module set; %s", rootSpec, dir, uuid, moduleAdvice)}
	}
	r.FSType = fsType
	var why string
	switch {
	case devErr != nil:
		why = devErr.Error()
	case dev.Virtual && dev.BackingFile != "":
		why = fmt.Sprintf("it is on %s, a loop device backed by %s", dev.Name, dev.BackingFile)
	case dev.Virtual:
		why = fmt.Sprintf("it is on %s, which is not a disk", dev.Name)
	case len(dev.Drivers) == 0:
		why = fmt.Sprintf("sysfs names no driver for %s", dev.Name)
	}
	if why != "" {
		return r, fsType + " root on an unknown disk", []string{fmt.Sprintf("initramfs: the disk that sysroot %s boots from is not known (%s): the initramfs gets the drivers of the common disk controllers (%s); %s",
			dir, why, strings.Join(initramfs.DiskModules(), ", "), moduleAdvice)}
	}
	r.Drivers = dev.Drivers
	return r, fmt.Sprintf("%s root on %s (%s)", fsType, dev.Name, strings.Join(dev.Drivers, ", ")), nil
}
