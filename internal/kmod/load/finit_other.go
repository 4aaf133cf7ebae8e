//go:build !linux

package load

import "syscall"

const compressedFlag = 4

var finitModule = func(fd int, params string, flags int) error { return syscall.ENOSYS }

func openModule(p string) (int, error) { return -1, syscall.ENOSYS }

func closeFD(fd int) {}

func finitFlags(fd int) (int, error) { return 0, syscall.ENOSYS }

func errnoName(e syscall.Errno) string { return "" }

func isSignatureErrno(e syscall.Errno) bool { return e == syscall.EBADMSG }
