// Package composefs ties the image writer to files: it writes an image
// atomically (to a path, standard output, or nowhere) while measuring its
// fs-verity digest in the same pass.
package composefs

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// ErrStdoutTTY refuses to write a binary image to a terminal.
var ErrStdoutTTY = errors.New("stdout is a terminal; refusing to write an image to it")

// Measure returns the fs-verity digest of the image root would produce,
// without writing it anywhere.
func Measure(root *erofs.Node, opts erofs.WriteOptions) (verity.Digest, error) {
	h := verity.NewHasher()
	if err := erofs.Write(h, root, opts); err != nil {
		return verity.Digest{}, err
	}
	return h.Sum(), nil
}

// WriteFile writes the image of root to path ("-" is standard output) and
// returns its fs-verity digest. A file is replaced atomically: on any error
// nothing is left at path.
func WriteFile(path string, root *erofs.Node, opts erofs.WriteOptions) (verity.Digest, error) {
	h := verity.NewHasher()
	if path == "-" {
		if isTerminal(os.Stdout) {
			return verity.Digest{}, ErrStdoutTTY
		}
		if err := erofs.Write(io.MultiWriter(os.Stdout, h), root, opts); err != nil {
			return verity.Digest{}, fmt.Errorf("write image to stdout: %w", err)
		}
		return h.Sum(), nil
	}
	f, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return verity.Digest{}, err
	}
	defer f.Abort()
	if err := erofs.Write(io.MultiWriter(f, h), root, opts); err != nil {
		return verity.Digest{}, fmt.Errorf("write image %s: %w", path, err)
	}
	if err := f.Commit(); err != nil {
		return verity.Digest{}, err
	}
	return h.Sum(), nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
