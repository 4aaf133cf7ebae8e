package fstree

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The *at system calls below take the entry name as a pointer to a
// NUL-terminated string. Directory listings come from getdents64, whose
// records already hold each name NUL-terminated, so the scanner passes
// pointers into its listing buffer and converts no names for the kernel.

const statxMask = unix.STATX_CTIME | unix.STATX_TYPE | unix.STATX_MODE | unix.STATX_NLINK | unix.STATX_UID |
	unix.STATX_GID | unix.STATX_MTIME | unix.STATX_INO | unix.STATX_SIZE

// lstatAt is lstat of name in dirfd.
func lstatAt(dirfd int, name *byte, stx *unix.Statx_t) error {
	_, _, e := unix.Syscall6(unix.SYS_STATX, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, statxMask, uintptr(unsafe.Pointer(stx)), 0)
	return errnoErr(e)
}

func openAt(dirfd int, name *byte, flags int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		uintptr(flags|unix.O_CLOEXEC|unix.O_LARGEFILE), 0, 0, 0)
	return int(r), errnoErr(e)
}

func readlinkAt(dirfd int, name *byte, buf []byte) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	return int(r), errnoErr(e)
}

// listxattrAt is listxattrat(2) (Linux 6.13) without following symlinks.
// An empty buf asks for the size of the list.
func listxattrAt(dirfd int, name *byte, buf []byte) (int, error) {
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	r, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(p), uintptr(len(buf)), 0)
	return int(r), errnoErr(e)
}

// xattrArgs is struct xattr_args of getxattrat(2).
type xattrArgs struct {
	value uint64 // user pointer
	size  uint32
	flags uint32
}

// getxattrAt is getxattrat(2) (Linux 6.13) without following symlinks.
// An empty buf asks for the size of the value.
func getxattrAt(dirfd int, name, attr *byte, buf []byte) (int, error) {
	args := xattrArgs{size: uint32(len(buf))}
	if len(buf) > 0 {
		args.value = uint64(uintptr(unsafe.Pointer(&buf[0])))
	}
	r, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(attr)),
		uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	// buf is only reachable from args as an integer; keep it alive (the
	// Go heap does not move objects, and buf is never on the stack).
	runtime.KeepAlive(buf)
	return int(r), errnoErr(e)
}

// readFull reads from fd into buf until it is full or the file ends.
func readFull(fd int, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}
