package verity

import (
	"errors"
	"fmt"
)

var (
	// ErrUnsupported means the kernel or filesystem cannot do fs-verity
	// on this file (no CONFIG_FS_VERITY, filesystem without the verity
	// feature, or a filesystem type that does not implement it at all).
	ErrUnsupported = errors.New("filesystem cannot do fs-verity")

	// ErrNotEnabled means the filesystem supports fs-verity but the file
	// does not have it enabled.
	ErrNotEnabled = errors.New("fs-verity is not enabled on file")
)

// MismatchError reports a file whose kernel-measured fs-verity digest is
// not the expected one.
type MismatchError struct {
	Path string
	Want Digest
	Got  Digest
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("fs-verity digest mismatch for %s: expected %s, got %s", e.Path, e.Want, e.Got)
}
