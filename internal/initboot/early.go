package initboot

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// apiMount is one of the kernel file systems PID 1 sets up first.
type apiMount struct {
	fstype, target string
	flags          uintptr
	data           string
}

// apiMounts are mounted in this order: /proc and /sys to read the command
// line and find devices, devtmpfs for the device nodes, /run for the boot
// record and the overlay's scratch mounts. They move into the new root.
var apiMounts = []apiMount{
	{"proc", "/proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", unix.MS_NOSUID, "mode=0755"},
	{"tmpfs", "/run", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
}

// mountAPI mounts /proc, /sys, /dev and /run. One already mounted (EBUSY)
// is fine. It also makes every mount private, so that moving mounts later
// is never refused because of shared propagation.
func mountAPI(log *Log) error {
	for _, m := range apiMounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", m.target, err)
		}
		err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		log.Debugf("making / private: %v", err)
	}
	return nil
}
