package mount

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// layer is the mounted EROFS image: a detached mount (mntfd) that can be
// moved to a temporary directory when a path is needed. Overlayfs takes its
// own private copy of a layer, so the layer is released once the overlay
// exists.
type layer struct {
	mntfd int    // detached mount, -1 once attached or when mounted by mount(2)
	dir   string // directory it is mounted on, "" while detached
	// at is the caller's directory to attach to (Options.LayerDir), ""
	// for a temporary one.
	at string
}

// Knobs for tests, so that the fallbacks this kernel never needs still run.
var (
	forceLoop        bool // skip the file-backed EROFS mount
	forceLegacyErofs bool // mount EROFS with mount(2) instead of fsopen
	forceAttach      bool // never hand overlayfs a detached mount
	forceLegacy      bool // mount overlayfs with mount(2)
)

// mountErofs mounts the image read-only, from the file itself where the
// kernel can (Linux 6.12+), otherwise from a loop device.
// at is where the layer is to be attached, "" for a temporary directory.
func mountErofs(img *image, at string) (*layer, error) {
	if forceLegacyErofs {
		return mountErofsLegacy(img, at)
	}
	l, err := mountErofsNewAPI(img, forceLoop)
	if errors.Is(err, unix.ENOSYS) {
		return mountErofsLegacy(img, at)
	}
	if l != nil {
		l.at = at
	}
	return l, err
}

// mountErofsNewAPI mounts the image with the new mount API, from the file
// or else from a loop device; skipFile goes straight to the loop device.
func mountErofsNewAPI(img *image, skipFile bool) (*layer, error) {
	var fileErr error
	if !skipFile {
		l, err := newAPIErofs(img, img.procPath())
		// ENOTBLK: no file-backed mounts in this kernel. EINVAL: the
		// image's filesystem cannot back one (no read_folio), or the
		// image is bad, which the loop device will show again.
		if err == nil || !errors.Is(err, unix.ENOTBLK) && !errors.Is(err, unix.EINVAL) {
			return l, err
		}
		fileErr = err
	}
	loop, err := attachLoop(img)
	if err == nil {
		defer loop.close() // the mount holds the device; autoclear does the rest
		var l *layer
		if l, err = newAPIErofs(img, loop.path); err == nil {
			return l, nil
		}
	}
	if fileErr != nil {
		return nil, fmt.Errorf("%w; from the file itself: %w", err, fileErr)
	}
	return nil, err
}

func newAPIErofs(img *image, source string) (*layer, error) {
	c, err := openFSContext("erofs", StepErofs)
	if err != nil {
		return nil, err
	}
	defer c.close()
	if err := c.setString("source", source); err != nil {
		return nil, err
	}
	if err := c.setFlag("ro"); err != nil {
		return nil, err
	}
	if !img.hasACL {
		// Saves the ACL lookups on every permission check of an image
		// that has none, as libcomposefs does.
		if err := c.setFlag("noacl"); err != nil {
			return nil, err
		}
	}
	if err := c.create(); err != nil {
		var me *MountError
		if errors.As(err, &me) {
			me.Op += " (source " + source + ")"
		}
		return nil, err
	}
	fd, err := c.mount(unix.MOUNT_ATTR_RDONLY)
	if err != nil {
		return nil, err
	}
	return &layer{mntfd: fd}, nil
}

// mountErofsLegacy is for kernels without fsopen: mount(2) onto a
// temporary directory.
func mountErofsLegacy(img *image, at string) (*layer, error) {
	dir, err := layerDir(at)
	if err != nil {
		return nil, err
	}
	data := ""
	if !img.hasACL {
		data = "noacl"
	}
	src := img.procPath()
	err = unix.Mount(src, dir, "erofs", unix.MS_RDONLY|unix.MS_SILENT, data)
	if errors.Is(err, unix.ENOTBLK) || errors.Is(err, unix.EINVAL) {
		var loop *loopDevice
		loop, err = attachLoop(img)
		if err != nil {
			removeLayerDir(dir, at)
			return nil, err
		}
		src = loop.path
		err = unix.Mount(src, dir, "erofs", unix.MS_RDONLY, data)
		loop.close()
	}
	if err != nil {
		removeLayerDir(dir, at)
		return nil, &MountError{Step: StepErofs, Op: fmt.Sprintf("mount(2) %s on %s", src, dir), Err: err, InDmesg: true}
	}
	return &layer{mntfd: -1, dir: dir, at: at}, nil
}

// idmap makes the detached EROFS mount show file owners through the uid
// and gid maps of the user namespace at nsPath. It has to happen before
// the mount is attached anywhere.
func (l *layer) idmap(nsPath string) error {
	if l.mntfd < 0 {
		return &MountError{Step: StepIdmap, Op: "mount_setattr", Err: errors.New("idmapped mounts need the new mount API (fsopen)")}
	}
	ns, err := os.Open(nsPath)
	if err != nil {
		return &MountError{Step: StepIdmap, Op: "open user namespace", Err: err}
	}
	defer ns.Close()
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(l.mntfd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return &MountError{Step: StepIdmap, Op: "mount_setattr MOUNT_ATTR_IDMAP " + nsPath, Err: err}
	}
	return nil
}

// path names the layer for overlayfs: the detached mount through its
// descriptor (kernels that accept detached layers), or the directory.
func (l *layer) path() string {
	if l.dir != "" {
		return l.dir
	}
	return fmt.Sprintf("/proc/self/fd/%d", l.mntfd)
}

// layerDir returns the directory to mount the layer on: at, created if
// missing, or a fresh temporary one.
func layerDir(at string) (string, error) {
	if at == "" {
		return makeTempDir()
	}
	if err := os.MkdirAll(at, 0o755); err != nil {
		return "", fmt.Errorf("create the layer directory: %w", err)
	}
	return at, nil
}

// removeLayerDir removes a temporary layer directory; the caller's own
// (at) stays.
func removeLayerDir(dir, at string) {
	if dir != at {
		os.Remove(dir)
	}
}

// attach moves the detached mount onto its directory (Options.LayerDir or
// a fresh temporary one), for kernels that want layers to be mounted
// somewhere, for mount(2), and for a layer that is to stay mounted.
func (l *layer) attach() error {
	if l.dir != "" {
		return nil
	}
	dir, err := layerDir(l.at)
	if err != nil {
		return err
	}
	if err := unix.MoveMount(l.mntfd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		removeLayerDir(dir, l.at)
		return &MountError{Step: StepAttach, Op: "move_mount EROFS to " + dir, Err: err}
	}
	unix.Close(l.mntfd)
	l.mntfd = -1
	l.dir = dir
	return nil
}

// release drops this process's hold on the layer: a detached mount goes
// away with its descriptor, an attached one is detached lazily (overlayfs
// has its own copy) and a temporary directory removed. With keep, an
// attached layer stays mounted where it is.
func (l *layer) release(keep bool) error {
	if l.mntfd >= 0 {
		unix.Close(l.mntfd)
		l.mntfd = -1
	}
	if l.dir == "" || keep {
		return nil
	}
	if err := unix.Unmount(l.dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount EROFS layer %s: %w", l.dir, err)
	}
	if l.dir != l.at {
		if err := os.Remove(l.dir); err != nil {
			return fmt.Errorf("remove temporary directory: %w", err)
		}
	}
	l.dir = ""
	return nil
}
