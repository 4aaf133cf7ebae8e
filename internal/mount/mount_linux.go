package mount

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Mount mounts the composefs image opts.Image on target.
//
// The sequence: open the image once; if opts.ExpectDigest is set, measure
// that open file and refuse on any mismatch; check the composefs header;
// mount EROFS read-only from the same descriptor (/proc/self/fd/N, or a
// loop device on kernels without file-backed EROFS); optionally idmap it;
// mount overlayfs with the EROFS as lower layer and opts.ObjectDirs as
// data-only layers, and put it on target. Every intermediate mount and
// temporary directory is gone when Mount returns, whether it failed or not:
// the overlay keeps its own reference to the EROFS mount. Only a LayerDir
// stays mounted, and only when Mount succeeds.
//
// Mount fails with an error wrapping ErrNoVerity, ErrNotComposefs, a
// *DigestMismatchError or a *MountError; nothing is mounted on target then.
func Mount(target string, opts Options) error {
	if err := mount(target, opts); err != nil {
		return fmt.Errorf("mount composefs %s on %s: %w", opts.Image, target, err)
	}
	return nil
}

func mount(target string, opts Options) (err error) {
	if err := opts.validate(); err != nil {
		return err
	}
	opts, err = opts.absolute()
	if err != nil {
		return err
	}
	img, err := openImage(opts.Image, &opts)
	if err != nil {
		return err
	}
	defer img.Close()

	lower, err := mountErofs(img, opts.LayerDir)
	if err != nil {
		return err
	}
	defer func() {
		// A LayerDir stays mounted, but only under a mounted overlay.
		rerr := lower.release(err == nil && opts.LayerDir != "")
		if rerr != nil && err == nil {
			// Keep the promise that an error means nothing is mounted.
			unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
			err = rerr
		}
	}()
	if opts.IdmapUserns != "" {
		if err := lower.idmap(opts.IdmapUserns); err != nil {
			return err
		}
	}
	layout, err := mountOverlay(target, lower, &opts)
	if err == nil && !opts.RequireVerity && opts.Logf != nil {
		opts.Logf("%s mounted without verity=require, overlay layout: %s", target, layout)
	}
	return err
}
