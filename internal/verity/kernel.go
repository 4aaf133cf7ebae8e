package verity

import (
	"errors"
	"fmt"
	"os"
)

// Verify checks that the kernel's fs-verity measurement of f is want.
// It fails with ErrNotEnabled or ErrUnsupported when the kernel cannot
// vouch for the file, since a userspace digest proves nothing about what
// later reads will return.
func Verify(f *os.File, want Digest) error {
	got, err := Measure(f)
	if err != nil {
		return err
	}
	if got != want {
		return &MismatchError{Path: f.Name(), Want: want, Got: got}
	}
	return nil
}

// MeasureOrCompute returns the kernel's measurement of f when the file has
// fs-verity enabled, and otherwise the digest computed in userspace from
// the file's contents. fromKernel tells which one it is: only a kernel
// measurement is enforced on later reads.
func MeasureOrCompute(f *os.File) (d Digest, fromKernel bool, err error) {
	d, err = Measure(f)
	if err == nil {
		return d, true, nil
	}
	if !errors.Is(err, ErrNotEnabled) && !errors.Is(err, ErrUnsupported) {
		return Digest{}, false, err
	}
	d, err = DigestFile(f)
	if err != nil {
		return Digest{}, false, fmt.Errorf("measure or compute fs-verity digest: %w", err)
	}
	return d, false, nil
}
