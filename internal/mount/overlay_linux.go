package mount

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// What to try after the new mount API failed.
type overlayNext int

const (
	giveUp         overlayNext = iota // the error stands
	retryAttached                     // the kernel may not take a detached layer
	useLegacyMount                    // this overlayfs predates lowerdir+/datadir+
)

// Overlay layouts, as Options.Logf reports them.
const (
	layoutDataOnly       = "data-only object layers (lowerdir+/datadir+)"
	layoutDataOnlyLegacy = "data-only object layers (mount(2), lowerdir=IMAGE::OBJECTS)"
	layoutOrdinaryLower  = "object directories as an ordinary lower layer (mount(2), lowerdir=IMAGE:OBJECTS; this overlayfs has no data-only layers): files placed in them at tree paths show in the mount"
)

// mountOverlay mounts overlayfs on target with the EROFS layer as the only
// ordinary lower layer and the object directories as data-only layers
// below it, preferring the new mount API. It returns the layout it used.
func mountOverlay(target string, lower *layer, opts *Options) (string, error) {
	var apiErr error
	if !forceLegacy {
		// Kernels before 6.15 refuse a detached layer (and log an error
		// saying so); attach it first instead of paying for a failed try.
		// A layer that is to stay mounted is attached first, so that the
		// overlay's options name its directory.
		if forceAttach || lower.at != "" || !kernelAtLeast(6, 15) {
			if err := lower.attach(); err != nil {
				return "", err
			}
		}
		next, err := overlayNewAPI(target, lower, opts)
		if next == retryAttached && lower.dir == "" {
			if aerr := lower.attach(); aerr != nil {
				return "", errors.Join(err, aerr)
			}
			next, err = overlayNewAPI(target, lower, opts)
		}
		if err == nil {
			return layoutDataOnly, nil
		}
		if next != useLegacyMount {
			return "", err
		}
		apiErr = err
	}
	if err := lower.attach(); err != nil {
		return "", err
	}
	layout, err := overlayLegacy(target, lower.dir, opts)
	if err != nil && apiErr != nil {
		return "", fmt.Errorf("%w (the new mount API failed before: %v)", err, apiErr)
	}
	return layout, err
}

func overlayNewAPI(target string, lower *layer, opts *Options) (overlayNext, error) {
	c, err := openFSContext("overlay", StepOverlay)
	if errors.Is(err, unix.ENOSYS) {
		return useLegacyMount, err
	}
	if err != nil {
		return giveUp, err
	}
	defer c.close()
	// Before overlayfs had its own parameter parser (Linux 6.5) the kernel
	// collected any key into a mount(2) option string; such a context
	// accepts nonsense, and lowerdir+ would only fail at create.
	if unix.FsconfigSetFlag(c.fd, "cfs-deploy-probe-no-such-option") == nil {
		return useLegacyMount, &MountError{Step: StepOverlay, Op: "fsconfig", Err: errors.New("overlayfs has no fs_context parameter parser")}
	}
	c.drainLog() // the probe's own complaint
	for _, kv := range [][2]string{{"source", "composefs"}, {"metacopy", "on"}, {"redirect_dir", "on"}} {
		if err := c.setString(kv[0], kv[1]); err != nil {
			return giveUp, err
		}
	}
	if opts.RequireVerity {
		if err := c.setString("verity", "require"); err != nil {
			return giveUp, err
		}
	} else if opts.TryVerity {
		if err := c.setString("verity", "require"); err != nil && !errors.Is(err, unix.EINVAL) {
			return giveUp, err
		}
	}
	detached := lower.dir == ""
	// Order matters: overlayfs refuses a lower layer after a data layer.
	if err := c.setString("lowerdir+", lower.path()); err != nil {
		switch {
		case !errors.Is(err, unix.EINVAL):
			return giveUp, err
		case detached:
			return retryAttached, err
		default:
			return useLegacyMount, err
		}
	}
	for _, d := range opts.ObjectDirs {
		if err := c.setString("datadir+", d); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return useLegacyMount, err
			}
			return giveUp, err
		}
	}
	if opts.UpperDir != "" {
		// upperdir and workdir go through overlayfs's unescaping, the
		// layer options added in 6.7 do not.
		if err := c.setString("upperdir", escapeOverlayPath(opts.UpperDir)); err != nil {
			return giveUp, err
		}
		if err := c.setString("workdir", escapeOverlayPath(opts.WorkDir)); err != nil {
			return giveUp, err
		}
	}
	if err := c.create(); err != nil {
		if detached && errors.Is(err, unix.EINVAL) {
			// Kernels before 6.15 refuse layers outside the caller's
			// mount namespace, which is what a detached mount is.
			return retryAttached, err
		}
		return giveUp, err
	}
	attrs, _ := mountBits(opts)
	mfd, err := c.mount(attrs)
	if err != nil {
		return giveUp, err
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return giveUp, &MountError{Step: StepAttach, Op: "move_mount overlay to " + target, Err: err}
	}
	return giveUp, nil
}

// mountBits returns the per-mount options as MOUNT_ATTR_* bits for
// fsmount(2) and as MS_* flags for mount(2), from one table so that the
// two ways of mounting the overlay apply the same options.
func mountBits(opts *Options) (attrs int, flags uintptr) {
	for _, b := range []struct {
		on   bool
		attr int
		flag uintptr
	}{
		{!opts.ReadWrite, unix.MOUNT_ATTR_RDONLY, unix.MS_RDONLY},
		{opts.NoSuid, unix.MOUNT_ATTR_NOSUID, unix.MS_NOSUID},
		{opts.NoDev, unix.MOUNT_ATTR_NODEV, unix.MS_NODEV},
		{opts.NoExec, unix.MOUNT_ATTR_NOEXEC, unix.MS_NOEXEC},
	} {
		if b.on {
			attrs |= b.attr
			flags |= b.flag
		}
	}
	return attrs, flags
}

// overlayLegacy mounts with mount(2) and one option string, as kernels
// before 6.7 need. It tries data-only layers ("::", Linux 6.5) first.
// Only a mount that does not require verity then tries the object
// directories as ordinary lower layers, whose fan-out directories the
// image's 00..ff whiteouts hide but whose other files would show: under
// verity=require that would put unverified files in the verified tree.
// With TryVerity it drops verity=require if the kernel does not know it.
func overlayLegacy(target, lowerDir string, opts *Options) (string, error) {
	verityChoices := []bool{false}
	layouts := []string{"::", ":"}
	switch {
	case opts.RequireVerity:
		verityChoices = []bool{true}
		layouts = []string{"::"}
	case opts.TryVerity:
		verityChoices = []bool{true, false}
	}
	_, flags := mountBits(opts)
	var first error
	for _, sep := range layouts {
		for _, v := range verityChoices {
			data := legacyOptions(lowerDir, opts, sep, v)
			err := sysMount("composefs", target, "overlay", flags|unix.MS_SILENT, data)
			if err == nil {
				if sep == ":" {
					return layoutOrdinaryLower, nil
				}
				return layoutDataOnlyLegacy, nil
			}
			if first == nil {
				first = &MountError{Step: StepOverlay, Op: "mount(2) overlay " + data, Err: err, InDmesg: true}
			}
			if !errors.Is(err, unix.EINVAL) {
				return "", first
			}
		}
	}
	if opts.RequireVerity {
		return "", fmt.Errorf("%w: %w", ErrNoDataOnlyLayers, first)
	}
	return "", first
}

// sysMount is mount(2); tests replace it to play kernels without a
// feature.
var sysMount = unix.Mount

func legacyOptions(lowerDir string, opts *Options, dataSep string, verity bool) string {
	var b strings.Builder
	b.WriteString("metacopy=on,redirect_dir=on,lowerdir=")
	b.WriteString(escapeOverlayPath(lowerDir))
	for _, d := range opts.ObjectDirs {
		b.WriteString(dataSep)
		b.WriteString(escapeOverlayPath(d))
	}
	if opts.UpperDir != "" {
		b.WriteString(",upperdir=" + escapeOverlayPath(opts.UpperDir))
		b.WriteString(",workdir=" + escapeOverlayPath(opts.WorkDir))
	}
	if verity {
		b.WriteString(",verity=require")
	}
	return b.String()
}

// escapeOverlayPath protects the characters overlayfs splits its options
// and layer lists on; it removes one backslash before any character.
func escapeOverlayPath(p string) string {
	if !strings.ContainsAny(p, `\,:`) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\', ',', ':':
			b.WriteByte('\\')
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// kernelAtLeast reports whether the running kernel's release is at least
// major.minor; an unparsable release counts as new.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return true
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		return true
	}
	return ma > major || ma == major && mi >= minor
}
