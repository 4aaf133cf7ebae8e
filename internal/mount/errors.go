package mount

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

var (
	// ErrNotComposefs means the image does not start with the composefs
	// header, so it is not an image this package will mount.
	ErrNotComposefs = errors.New("not a composefs image")

	// ErrNoVerity means a digest was expected but the kernel cannot vouch
	// for the image: its filesystem has no fs-verity, or the file does not
	// have it enabled. The error also wraps verity.ErrUnsupported or
	// verity.ErrNotEnabled.
	ErrNoVerity = errors.New("image has no fs-verity")

	// ErrNoDataOnlyLayers means overlayfs refused data-only lower layers
	// (Linux 6.5 added them) for a mount that requires verity: the only
	// other layout makes the object directory an ordinary lower layer,
	// whose own files would show in the tree.
	ErrNoDataOnlyLayers = errors.New("overlayfs cannot use the object directories as data-only layers, which verity=require needs")
)

// DigestMismatchError reports an image whose fs-verity digest is not the
// expected one.
type DigestMismatchError struct {
	Image string
	Want  verity.Digest
	Got   verity.Digest
	// FromKernel tells whether Got is the kernel's measurement or was
	// computed in userspace (AllowUserspaceDigest on a file without
	// fs-verity).
	FromKernel bool
}

func (e *DigestMismatchError) Error() string {
	how := "measured"
	if !e.FromKernel {
		how = "computed"
	}
	// No path: Mount's wrapping names the image.
	return fmt.Sprintf("image fs-verity digest mismatch: expected %s, %s %s", e.Want, how, e.Got)
}

// Steps of a mount, as named in MountError.
const (
	StepErofs   = "erofs"   // mounting the image
	StepLoop    = "loop"    // setting up a loop device for the image
	StepIdmap   = "idmap"   // idmapping the EROFS mount
	StepOverlay = "overlay" // mounting overlayfs on top
	StepAttach  = "attach"  // putting a detached mount at a path
)

// MountError reports a failed system call of the mount sequence, with the
// messages the kernel left in the filesystem context's log, which say far
// more than the errno does.
type MountError struct {
	Step string   // one of the Step constants
	Op   string   // the call and its argument, e.g. "fsconfig lowerdir+=/x"
	Err  error    // usually a unix.Errno
	Log  []string // fs_context messages ("e overlay: ..."), if any
	// InDmesg marks a mount(2) failure: the kernel's reasons went to the
	// kernel log, where only dmesg shows them.
	InDmesg bool
}

func (e *MountError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s: %v", e.Step, e.Op, e.Err)
	if len(e.Log) > 0 {
		fmt.Fprintf(&b, " (kernel: %s)", strings.Join(e.Log, "; "))
	}
	if e.InDmesg {
		b.WriteString(" (see dmesg for the kernel's reason)")
	}
	return b.String()
}

func (e *MountError) Unwrap() error { return e.Err }
