package initboot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/mount"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"

	"golang.org/x/sys/unix"
)

// Repository layout on the physical root.
const (
	repoDir    = "composefs"
	imagesDir  = "composefs/images"
	objectsDir = "composefs/objects"
)

// chosenImage is the image cfs-init boots.
type chosenImage struct {
	Ref  bootcfg.ImageRef
	Rel  string // composefs/images/<hex>, relative to the physical root
	Path string // the same under the physical root's mount point
	// KernelVerity: the kernel measured the image (and checked every
	// block as it was read). False only for an insecure image without
	// fs-verity, whose digest was computed in userspace.
	KernelVerity bool
}

// openRepo checks that sysroot holds a repository. Its meta.json is not
// read: the images are looked up by their SHA-256 fs-verity digest, which
// is the only name a repository of another algorithm cannot have, and
// reading it would cost a disk read on every boot.
func openRepo(sysroot string) error {
	dir := filepath.Join(sysroot, repoDir)
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the root file system has no composefs repository: %s is missing; root= names the wrong device, or nothing was deployed to it", dir)
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

// chooseImage returns the first image of the plan that the repository
// holds. "Not there" moves on to the next; anything else (a link to a
// missing object, an unreadable directory) is an error, since skipping it
// could boot an older image than the one meant.
func chooseImage(sysroot string, refs []bootcfg.ImageRef, log *Log) (*chosenImage, error) {
	var missing []string
	for _, ref := range refs {
		rel := filepath.Join(imagesDir, ref.Digest.String())
		path := filepath.Join(sysroot, rel)
		_, err := os.Lstat(path)
		if errors.Is(err, os.ErrNotExist) {
			log.Debugf("image %s (%s) is not in the repository, trying the next", ref.Digest, ref.Source)
			missing = append(missing, ref.Source)
			continue
		}
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(path); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, &bootError{msg: fmt.Sprintf("image %s is a link to an object that is missing: the repository is damaged (run cfs-deploy fsck)", rel), err: err}
			}
			return nil, err
		}
		return &chosenImage{Ref: ref, Rel: rel, Path: path}, nil
	}
	return nil, &bootError{msg: fmt.Sprintf("none of the images the kernel command line names is in the repository %s (tried %s); the deployment was removed or root= names the wrong device",
		filepath.Join(sysroot, imagesDir), strings.Join(missing, ", "))}
}

// verifyImage checks the image before anything mounts it. With fs-verity
// the kernel's measurement must equal the digest, and the whole file is
// read once: the measurement is what was recorded when verity was enabled,
// so a file changed underneath afterwards still measures right, but its
// changed blocks fail to read (EIO). An insecure image (composefs=?) on a
// file system without fs-verity is left to mount.Mount, which computes its
// digest while it holds the file open for mounting.
func verifyImage(img *chosenImage) error {
	// O_NONBLOCK: a FIFO planted under the image's name must not hang the
	// boot (nothing would ever reboot it); it is refused below.
	f, err := os.OpenFile(img.Path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return err
	} else if !fi.Mode().IsRegular() {
		return &bootError{msg: fmt.Sprintf("image %s is not a regular file (%s); the repository is damaged or tampered with", img.Rel, fi.Mode().Type())}
	}
	got, err := verity.Measure(f)
	if errors.Is(err, verity.ErrNotEnabled) || errors.Is(err, verity.ErrUnsupported) {
		if img.Ref.Insecure {
			return nil
		}
		return &bootError{msg: fmt.Sprintf("image %s has no fs-verity digest the kernel can vouch for (%s); the kernel command line asks for a verified image (composefs=%s, without '?'). Either fs-verity was lost (the file was copied or the file system recreated) or this is an insecure deployment whose boot entry should say composefs=?%s",
			img.Rel, noVerityReason(err), img.Ref.Digest, img.Ref.Digest), err: err}
	}
	if err != nil {
		return err
	}
	img.KernelVerity = true
	if got != img.Ref.Digest {
		return &bootError{msg: mismatchText(img.Rel, got, img.Ref.Digest, true), err: err}
	}
	if off, err := readThrough(f); err != nil {
		return &bootError{msg: fmt.Sprintf("image %s has the expected fs-verity digest %s, but reading it failed at byte %d (%v): its contents were changed after fs-verity was enabled (offline tampering or disk corruption)",
			img.Rel, img.Ref.Digest, off, errText(err)), err: err}
	}
	return nil
}

func noVerityReason(err error) string {
	if errors.Is(err, verity.ErrNotEnabled) {
		return "fs-verity is not enabled on the file"
	}
	return "its file system cannot do fs-verity"
}

func mismatchText(rel string, got, want verity.Digest, fromKernel bool) string {
	if fromKernel {
		return fmt.Sprintf("image %s has fs-verity digest %s, the kernel command line expects %s; the image was changed or the boot entry is wrong", rel, got, want)
	}
	return fmt.Sprintf("image %s has fs-verity digest %s (computed by cfs-init: insecure deployment without fs-verity), the kernel command line expects %s; the image was changed or the boot entry is wrong", rel, got, want)
}

// readThrough reads f from start to end, so fs-verity checks every block,
// and returns the offset where reading failed.
func readThrough(f *os.File) (int64, error) {
	buf := make([]byte, 256<<10)
	var off int64
	for {
		n, err := f.ReadAt(buf, off)
		off += int64(n)
		if errors.Is(err, io.EOF) {
			return off, nil
		}
		if err != nil {
			return off, err
		}
	}
}

// mountImage mounts the chosen image on target: EROFS from the file (a
// loop device where the kernel cannot), overlayfs on top with the object
// store as data-only layer and verity=require, except for an insecure
// image. mount.Mount checks the digest once more on the descriptor it
// mounts. The EROFS layer stays mounted on layerDir, which the overlay's
// options name.
func mountImage(img *chosenImage, sysroot, layerDir, target string, log *Log) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	// The image is opened through a detached clone of the physical
	// root's mount: the EROFS mount keeps its file open for as long as
	// the system runs, and a file open through the visible mount would
	// keep it busy, so systemd-shutdown could remount it read-only but
	// not unmount it (and says so at every shutdown). The clone stays
	// alive, out of sight, while the image is mounted.
	path := img.Path
	if tree, err := unix.OpenTree(unix.AT_FDCWD, sysroot, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC); err == nil {
		defer unix.Close(tree)
		path = fmt.Sprintf("/proc/self/fd/%d/%s", tree, img.Rel)
	} else {
		log.Debugf("open_tree %s: %v; the image is opened through the visible mount", sysroot, err)
	}
	want := img.Ref.Digest
	err := mount.Mount(target, mount.Options{
		Image:                path,
		ObjectDirs:           []string{filepath.Join(sysroot, objectsDir)},
		ExpectDigest:         &want,
		AllowUserspaceDigest: img.Ref.Insecure,
		RequireVerity:        !img.Ref.Insecure,
		Logf:                 log.Printf, // insecure mounts: which layout
		LayerDir:             layerDir,
	})
	var mm *mount.DigestMismatchError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &mm):
		return &bootError{msg: mismatchText(img.Rel, mm.Got, mm.Want, mm.FromKernel), err: err}
	case errors.Is(err, mount.ErrNotComposefs):
		return &bootError{msg: fmt.Sprintf("image %s is not a composefs image: %v", img.Rel, err), err: err}
	}
	return &bootError{msg: fmt.Sprintf("cannot mount image %s: %v", img.Rel, err), err: err}
}

// errText prefers the errno's plain text ("input/output error").
func errText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}
