package oci

import "golang.org/x/sys/unix"

func setxattr(p, k, v string) error { return unix.Lsetxattr(p, k, []byte(v), 0) }
func mknod(p string, maj, min uint32) error {
	return unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(maj, min)))
}
func mkfifo(p string) error { return unix.Mkfifo(p, 0o600) }
