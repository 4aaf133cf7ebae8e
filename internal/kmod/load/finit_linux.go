package load

import "golang.org/x/sys/unix"

// compressedFlag asks the kernel to decompress the module file itself.
const compressedFlag = unix.MODULE_INIT_COMPRESSED_FILE

// finitModule is the finit_module(2) system call. Tests replace it: loading
// modules into the kernel that runs the tests is never wanted.
var finitModule = unix.FinitModule

func openModule(p string) (int, error) {
	return unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

func closeFD(fd int) { unix.Close(fd) }

// finitFlags reads the first bytes of the module file to choose the flags.
func finitFlags(fd int) (int, error) {
	var head [4]byte
	n, err := unix.Pread(fd, head[:], 0)
	if err != nil {
		return 0, err
	}
	return flagsForHeader(head[:n]), nil
}

func errnoName(e unix.Errno) string { return unix.ErrnoName(e) }

func isSignatureErrno(e unix.Errno) bool {
	switch e {
	case unix.EKEYREJECTED, unix.EKEYEXPIRED, unix.EKEYREVOKED, unix.ENOKEY, unix.EBADMSG:
		return true
	}
	return false
}
