package verity

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fsIocMeasureVerity is FS_IOC_MEASURE_VERITY, _IOWR('f', 134, struct
// fsverity_digest), which golang.org/x/sys/unix does not define. The
// struct's fixed part is 4 bytes; read|write direction encodes as
// 0xc0000000 on every Linux architecture (3<<30 generically, 6<<29 on
// mips, powerpc and sparc), so the value is the same everywhere.
const fsIocMeasureVerity = 0xc0046686

// measureArg is struct fsverity_digest followed by room for the digest,
// which the kernel fills up to Size bytes.
type measureArg struct {
	Algorithm uint16
	Size      uint16
	Digest    [64]byte // large enough for SHA-512, the longest algorithm
}

// Enable turns on fs-verity for f with the parameters composefs expects
// (SHA-256, 4 KiB blocks, no salt, no signature). The kernel requires f to
// be opened read-only and refuses (ETXTBSY) while any writable descriptor
// for the file is open. A file that already has verity is left as it is
// and reported as success; Measure tells whether its parameters match.
func Enable(f *os.File) error {
	arg := unix.FsverityEnableArg{
		Version:        1,
		Hash_algorithm: hashAlgSHA256,
		Block_size:     blockSize,
	}
	errno := ioctl(f, unix.FS_IOC_ENABLE_VERITY, unsafe.Pointer(&arg))
	return enableError(f.Name(), errno)
}

func enableError(name string, errno unix.Errno) error {
	switch errno {
	case 0, unix.EEXIST:
		return nil
	case unix.EOPNOTSUPP, unix.ENOTTY, unix.ENOPKG, unix.EINVAL:
		// EOPNOTSUPP: kernel without CONFIG_FS_VERITY, or the filesystem
		// lacks the verity feature. ENOTTY: the filesystem type has no
		// fs-verity at all (tmpfs, overlayfs...). ENOPKG: the kernel has no
		// SHA-256. EINVAL: our arguments are fixed and valid, so it means
		// this filesystem cannot use 4 KiB Merkle blocks (larger than its
		// block or page size) or f is not a regular file.
		return fmt.Errorf("enable verity on %s: %w (%w)", name, ErrUnsupported, errno)
	case unix.ETXTBSY:
		return fmt.Errorf("enable verity on %s: file is open for writing: %w", name, errno)
	default:
		return fmt.Errorf("enable verity on %s: %w", name, errno)
	}
}

// Measure returns the fs-verity digest the kernel holds for f. It fails
// with ErrNotEnabled if f has no verity and ErrUnsupported if the
// filesystem cannot have verity at all.
func Measure(f *os.File) (Digest, error) {
	arg := measureArg{Size: uint16(len(measureArg{}.Digest))}
	errno := ioctl(f, fsIocMeasureVerity, unsafe.Pointer(&arg))
	if err := measureError(f.Name(), errno); err != nil {
		return Digest{}, err
	}
	if arg.Algorithm != hashAlgSHA256 || arg.Size != hashSize {
		return Digest{}, fmt.Errorf("measure verity of %s: file uses hash algorithm %d with %d-byte digests, want SHA-256 (%d)",
			f.Name(), arg.Algorithm, arg.Size, hashAlgSHA256)
	}
	var d Digest
	copy(d[:], arg.Digest[:hashSize])
	return d, nil
}

func measureError(name string, errno unix.Errno) error {
	switch errno {
	case 0:
		return nil
	case unix.ENODATA:
		return fmt.Errorf("measure verity of %s: %w", name, ErrNotEnabled)
	case unix.EOPNOTSUPP, unix.ENOTTY:
		return fmt.Errorf("measure verity of %s: %w (%w)", name, ErrUnsupported, errno)
	default:
		return fmt.Errorf("measure verity of %s: %w", name, errno)
	}
}

// ioctl goes through SyscallConn so f stays open and in its current
// (possibly non-blocking) mode for the duration of the call, which
// f.Fd() would not guarantee.
func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) unix.Errno {
	rc, err := f.SyscallConn()
	if err != nil {
		return unix.EBADF
	}
	var errno unix.Errno
	cerr := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	})
	if cerr != nil {
		var e unix.Errno
		if errors.As(cerr, &e) {
			return e
		}
		return unix.EBADF // closed file: the only way Control fails
	}
	return errno
}
