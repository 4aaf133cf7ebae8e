//go:build !linux

package verity

import (
	"fmt"
	"os"
)

// Enable always fails: fs-verity is a Linux feature.
func Enable(f *os.File) error {
	return fmt.Errorf("enable verity on %s: %w", f.Name(), ErrUnsupported)
}

// Measure always fails: fs-verity is a Linux feature.
func Measure(f *os.File) (Digest, error) {
	return Digest{}, fmt.Errorf("measure verity of %s: %w", f.Name(), ErrUnsupported)
}
