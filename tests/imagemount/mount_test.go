package imagemount

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// kernelHas reports whether /proc/filesystems lists fs.
func kernelHas(fs string) bool {
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

// unmountLater unmounts dir when the test ends, lazily if a plain unmount
// fails. Cleanups run last-registered first, so registering the EROFS
// mount before the overlay unmounts the overlay first.
func unmountLater(t *testing.T, dir string) {
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Logf("umount %s: %v; detaching lazily", dir, err)
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("lazy umount %s: %v", dir, err)
			}
		}
	})
}

// mountErofs mounts image read-only at dir: file-backed where the kernel
// can (Linux 6.12+), else through a loop device.
func mountErofs(t *testing.T, image, dir string) {
	t.Helper()
	err := unix.Mount(image, dir, "erofs", unix.MS_RDONLY, "")
	if errors.Is(err, unix.ENOTBLK) {
		out, lerr := exec.Command("mount", "-t", "erofs", "-o", "ro,loop", image, dir).CombinedOutput()
		if lerr != nil {
			t.Fatalf("mount -t erofs -o ro,loop %s %s: %v\n%s", image, dir, lerr, out)
		}
		err = nil
	}
	if err != nil {
		t.Fatalf("mount -t erofs %s %s: %v", image, dir, err)
	}
	unmountLater(t, dir)
}

// mountOverlay mounts the composefs overlay: the EROFS mount as the only
// lower layer and the object store as a data-only lower layer ("::").
func mountOverlay(t *testing.T, meta, objects, dir string) {
	t.Helper()
	for _, p := range []string{meta, objects} {
		if strings.ContainsAny(p, ",:\\") {
			t.Fatalf("path %q cannot be passed to overlayfs unescaped", p)
		}
	}
	opts := "metacopy=on,redirect_dir=on,lowerdir=" + meta + "::" + objects
	if err := unix.Mount("overlay", dir, "overlay", unix.MS_RDONLY, opts); err != nil {
		t.Fatalf("mount -t overlay -o ro,%s overlay %s: %v", opts, dir, err)
	}
	unmountLater(t, dir)
}
