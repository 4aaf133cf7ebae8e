package mount

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// The composefs header at offset 0 of an image (EROFS ignores its first
// 1024 bytes, which is where composefs keeps it).
const (
	composefsMagic     = 0xd078629a
	composefsHeaderLen = 32
	headerFlagsOffset  = 8
	headerFlagHasACL   = 1 << 0
)

// image is the opened image file; every later step uses this one
// descriptor so that the file that was checked is the file that is mounted.
type image struct {
	f      *os.File
	hasACL bool
}

// openImage opens path, checks its digest when asked, then its header.
func openImage(path string, opts *Options) (*image, error) {
	// Read-only is all the verity ioctls need; O_NONBLOCK keeps a FIFO
	// under the image's name from blocking the open (check refuses it).
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	img := &image{f: f}
	if err := img.check(opts); err != nil {
		f.Close()
		return nil, err
	}
	return img, nil
}

func (img *image) check(opts *Options) error {
	fi, err := img.f.Stat()
	if err != nil {
		return fmt.Errorf("stat image: %w", err)
	}
	if m := fi.Mode(); !m.IsRegular() && m&os.ModeDevice == 0 {
		return fmt.Errorf("%w: not a regular file or block device", ErrNotComposefs)
	}
	if opts.ExpectDigest != nil {
		if err := img.checkDigest(*opts.ExpectDigest, opts.AllowUserspaceDigest); err != nil {
			return err
		}
	}
	return img.readHeader()
}

func (img *image) checkDigest(want verity.Digest, allowUserspace bool) error {
	var (
		got        verity.Digest
		fromKernel = true
		err        error
	)
	if allowUserspace {
		got, fromKernel, err = verity.MeasureOrCompute(img.f)
	} else {
		got, err = verity.Measure(img.f)
		if errors.Is(err, verity.ErrNotEnabled) || errors.Is(err, verity.ErrUnsupported) {
			return fmt.Errorf("%w: %w", ErrNoVerity, err)
		}
	}
	if err != nil {
		return err // names the file already
	}
	if got != want {
		return &DigestMismatchError{Image: img.f.Name(), Want: want, Got: got, FromKernel: fromKernel}
	}
	return nil
}

func (img *image) readHeader() error {
	var h [composefsHeaderLen]byte
	n, err := img.f.ReadAt(h[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read composefs header: %w", err)
	}
	if n < len(h) {
		return fmt.Errorf("%w: the file is only %d bytes long", ErrNotComposefs, n)
	}
	if m := binary.LittleEndian.Uint32(h[0:]); m != composefsMagic {
		return fmt.Errorf("%w: header magic is %#08x, want %#08x", ErrNotComposefs, m, composefsMagic)
	}
	img.hasACL = binary.LittleEndian.Uint32(h[headerFlagsOffset:])&headerFlagHasACL != 0
	return nil
}

// procPath names the open image the way the kernel can look it up again.
func (img *image) procPath() string { return fmt.Sprintf("/proc/self/fd/%d", img.f.Fd()) }

func (img *image) Close() error { return img.f.Close() }
