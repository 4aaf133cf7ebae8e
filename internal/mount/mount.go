// Package mount mounts composefs images: the EROFS metadata image, read-only,
// under an overlayfs whose data-only lower layers are the object stores that
// hold the file contents. It does what libcomposefs's mount does, in Go, so
// that cfs-init and `cfs-deploy mount.composefs` need no C library.
//
// The image's own fs-verity digest is checked before anything is mounted,
// on the same open file that is then mounted, because neither EROFS nor
// overlayfs ever checks it: the caller's trusted digest is the root of the
// whole chain.
package mount

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Options describes one composefs mount.
type Options struct {
	// Image is the path of the composefs (EROFS) image file.
	Image string
	// ObjectDirs are the object stores ("basedir"), in lookup order. They
	// become overlayfs data-only lower layers.
	ObjectDirs []string

	// ExpectDigest, when set, is the fs-verity digest the image must have.
	// The kernel's measurement is required unless AllowUserspaceDigest.
	ExpectDigest *verity.Digest
	// AllowUserspaceDigest accepts an image without fs-verity (or on a
	// filesystem that cannot do it) when its digest computed in userspace
	// matches ExpectDigest. This is the insecure `composefs=?<digest>`
	// mode: the file can still change after it was hashed.
	AllowUserspaceDigest bool

	// RequireVerity mounts overlayfs with verity=require: every file must
	// carry a digest in the image and its object must have that fs-verity
	// digest, or open(2) fails with EIO.
	RequireVerity bool
	// TryVerity asks for verity=require only if the kernel knows the
	// option; without it the mount goes ahead unverified.
	TryVerity bool

	// UpperDir and WorkDir make the mount writable (both or neither).
	UpperDir, WorkDir string
	// ReadWrite leaves the overlay mount itself read-write. Without an
	// upper directory the filesystem stays read-only regardless.
	ReadWrite bool
	// NoSuid, NoDev and NoExec set the matching mount attributes on the
	// overlay mount.
	NoSuid, NoDev, NoExec bool

	// Logf, if set, is told which overlay layout an unverified mount
	// (RequireVerity unset) got, since one of them lets files placed in an
	// object directory show in the tree.
	Logf func(format string, args ...any)

	// LayerDir, when set, is where the EROFS layer is mounted and stays
	// mounted after Mount returns, so that the overlay's options
	// (lowerdir+=LayerDir) name a path that exists and can be inspected.
	// cfs-init keeps the image there for the booted system. It is
	// created if missing. Without it the layer lives on a temporary
	// directory that is gone when Mount returns.
	LayerDir string

	// IdmapUserns is the path of a user namespace file (for example
	// /proc/PID/ns/user). The EROFS layer is then mounted idmapped through
	// that namespace's uid and gid maps, so file owners shift accordingly.
	IdmapUserns string
}

func (o *Options) validate() error {
	if o.Image == "" {
		return errors.New("no image given")
	}
	if len(o.ObjectDirs) == 0 {
		return errors.New("no object directory (basedir) given")
	}
	for _, d := range o.ObjectDirs {
		if d == "" {
			return errors.New("empty object directory (basedir) given")
		}
	}
	if (o.UpperDir == "") != (o.WorkDir == "") {
		return errors.New("upperdir and workdir must be given together")
	}
	return nil
}

// absolute returns o with every path made absolute. The kernel resolves
// relative layer paths against the caller's working directory too, but
// mountinfo then shows paths nobody can interpret later.
func (o Options) absolute() (Options, error) {
	var err error
	abs := func(p *string) {
		if err == nil && *p != "" {
			*p, err = filepath.Abs(*p)
		}
	}
	abs(&o.Image)
	dirs := make([]string, len(o.ObjectDirs))
	copy(dirs, o.ObjectDirs)
	for i := range dirs {
		abs(&dirs[i])
	}
	o.ObjectDirs = dirs
	abs(&o.UpperDir)
	abs(&o.WorkDir)
	abs(&o.IdmapUserns)
	abs(&o.LayerDir)
	if err != nil {
		return o, fmt.Errorf("make paths absolute: %w", err)
	}
	return o, nil
}
