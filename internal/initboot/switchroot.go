package initboot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// moveMount moves the mount on src, with everything below it, to dst.
func moveMount(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move mount %s to %s: %w", src, dst, err)
	}
	return nil
}

// isRealDir reports whether p is a directory and not a symbolic link to
// one: mount points taken from the image, whose links would resolve in
// the initramfs's view (an image's /sysroot -> /dev would put the
// physical root over the initramfs's /dev).
func isRealDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// isDir reports whether p is a directory (following symlinks).
func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// checkInit makes sure init exists in newroot and is an executable file,
// resolving it (and any symlinks on the way, such as /sbin/init ->
// /lib/systemd/systemd) as the new root will see it. Once the initramfs
// is deleted there is no way back, so this is checked first.
func checkInit(newroot, init string) error {
	root, err := unix.Open(newroot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", newroot, err)
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, init, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
	if errors.Is(err, unix.ENOSYS) {
		return nil // kernel before 5.6: exec will tell
	}
	if err != nil {
		return &bootError{msg: fmt.Sprintf("the image has no init program %s (%v); init= names the wrong program or the image is not a bootable OS", init, errText(err)), err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 == 0 {
		return &bootError{msg: fmt.Sprintf("init program %s in the image is not an executable file (mode %o)", init, st.Mode)}
	}
	return nil
}

// switchRoot makes newroot the root and executes init in it, as PID 1,
// with args and env. First it frees the initramfs's memory: it deletes
// every file of the initramfs (never crossing into a mounted file system,
// and only if / really is the initramfs's ramfs or tmpfs). It returns
// only on failure.
func switchRoot(newroot, init string, args, env []string, log *Log) error {
	if err := unix.Chdir(newroot); err != nil {
		return fmt.Errorf("chdir %s: %w", newroot, err)
	}
	var sfs unix.Statfs_t
	var st unix.Stat_t
	if unix.Statfs("/", &sfs) == nil && (sfs.Type == unix.RAMFS_MAGIC || sfs.Type == unix.TMPFS_MAGIC) &&
		unix.Lstat("/", &st) == nil {
		n, err := removeContents("/", st.Dev)
		if err != nil {
			log.Debugf("freeing the initramfs: %v", err)
		}
		log.Debugf("freed the initramfs: removed %d files", n)
	} else {
		log.Printf("warning: / is not the initramfs (not ramfs or tmpfs); deleting nothing")
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s onto /: %w", newroot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into the new root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir / in the new root: %w", err)
	}
	argv := append([]string{init}, args...)
	if err := unix.Exec(init, argv, env); err != nil {
		return fmt.Errorf("execute %s: %w", init, err)
	}
	return nil
}

// removeContents deletes everything in dir that lives on the file system
// dev, recursively, without entering directories on which something is
// mounted. It keeps going after errors and returns the number of entries
// removed and the first error.
func removeContents(dir string, dev uint64) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var first error
	keep := func(err error) {
		if first == nil {
			first = err
		}
	}
	n := 0
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			keep(err)
			continue
		}
		if st.Dev != dev {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if isMountRoot(p) {
				continue
			}
			m, err := removeContents(p, dev)
			n += m
			if err != nil {
				keep(err)
			}
			if err := unix.Rmdir(p); err != nil {
				keep(fmt.Errorf("rmdir %s: %w", p, err))
				continue
			}
		} else if err := unix.Unlink(p); err != nil {
			keep(fmt.Errorf("unlink %s: %w", p, err))
			continue
		}
		n++
	}
	return n, first
}

// isMountRoot reports whether a mount sits on the directory p. A bind
// mount of a directory of the same file system has the same st_dev, so
// the device alone does not tell.
func isMountRoot(p string) bool {
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &stx)
	if err == nil && stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	}
	// Kernels before 5.8: compare with the parent's device.
	var st, parent unix.Stat_t
	if unix.Lstat(p, &st) != nil || unix.Lstat(filepath.Dir(p), &parent) != nil {
		return true // unsure: leave it alone
	}
	return st.Dev != parent.Dev
}
