package imagemount

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/mounttest"
	"golang.org/x/sys/unix"
)

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
	mounttest.UnmountLater(t, dir)
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
	mounttest.UnmountLater(t, dir)
}
