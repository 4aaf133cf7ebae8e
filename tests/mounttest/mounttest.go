// Package mounttest helps tests that mount file systems: it tells whether
// the kernel can mount a file system type, reads this mount namespace's
// mount table, and unmounts what a test mounted. Only tests import it.
package mounttest

import (
	"bufio"
	"github.com/cfs-deploy/cfs-deploy/internal/mountinfo"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// KernelHas reports whether /proc/filesystems lists fs.
func KernelHas(fs string) bool {
	f, err := os.Open("/proc/filesystems")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 && fields[len(fields)-1] == fs {
			return true
		}
	}
	return false
}

// SkipUnlessKernelHas skips the test unless the kernel has every one of
// the file systems.
func SkipUnlessKernelHas(t testing.TB, filesystems ...string) {
	t.Helper()
	for _, fs := range filesystems {
		if !KernelHas(fs) {
			t.Skipf("the kernel has no %s filesystem", fs)
		}
	}
}

// Mounts returns the mount points of this mount namespace, in the order of
// /proc/self/mountinfo (nil if it cannot be read).
func Mounts() []string {
	mounts, _ := mountinfo.Read("/proc/self/mountinfo")
	var out []string
	for _, m := range mounts {
		out = append(out, m.MountPoint)
	}
	return out
}

// IsMountPoint reports whether something is mounted on dir.
func IsMountPoint(dir string) bool {
	return slices.Contains(Mounts(), dir)
}

// Unmount unmounts everything mounted on dir, detaching lazily what a
// plain unmount cannot take away (a mount still busy), so that the test's
// temporary directories can be removed.
func Unmount(t testing.TB, dir string) {
	for IsMountPoint(dir) {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Logf("umount %s: %v; detaching lazily", dir, err)
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("umount %s: %v", dir, err)
				return
			}
		}
	}
}

// UnmountLater unmounts dir when the test ends. Cleanups run
// last-registered first, so a mount stacked on another (an overlay on its
// lower layer) is unmounted first if it was registered after it.
func UnmountLater(t testing.TB, dir string) {
	t.Cleanup(func() { Unmount(t, dir) })
}
