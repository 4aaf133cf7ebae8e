package etcmerge

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"golang.org/x/sys/unix"
)

// copy makes destPath a copy of the local entry name of parent, which
// lstat described as st, replacing what dest has there (a directory in
// both is kept and gets the local metadata). A directory's entries are
// copied too if recursive. It reports false if the entry was skipped.
func (m *merger) copy(parent *localDir, name, rel, destPath string, st *unix.Stat_t, recursive bool) (bool, error) {
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFSOCK {
		// A socket is only meaningful to the process listening on it.
		m.res.Skipped = append(m.res.Skipped, Note{Path: rel, Reason: "socket: not carried over"})
		return false, nil
	}
	var dst unix.Stat_t
	err := unix.Lstat(destPath, &dst)
	exists := err == nil
	if err != nil && err != unix.ENOENT {
		return false, &os.PathError{Op: "lstat", Path: destPath, Err: err}
	}
	keepDir := exists && typ == unix.S_IFDIR && dst.Mode&unix.S_IFMT == unix.S_IFDIR
	if exists && !keepDir {
		if dst.Mode&unix.S_IFMT != typ {
			m.conflict(rel, "the new image has a %s here; the local %s is kept",
				typeName(dst.Mode), typeName(st.Mode))
		}
		if err := os.RemoveAll(destPath); err != nil {
			return false, err
		}
	}

	n := statNode(name, st)
	xattrFD := -1
	switch typ {
	case unix.S_IFDIR:
		sub, err := parent.openDir(name)
		if err != nil {
			return false, err
		}
		defer sub.close()
		if n, err = dirNode(sub); err != nil {
			return false, err
		}
		if !keepDir {
			if err := unix.Mkdir(destPath, 0o700); err != nil {
				return false, &os.PathError{Op: "mkdir", Path: destPath, Err: err}
			}
		}
		m.dirs = append(m.dirs, destDir{destPath, n, keepDir})
		if recursive {
			return true, m.copyEntries(sub, destPath)
		}
		return true, nil
	case unix.S_IFREG:
		f, err := parent.openFile(name, st)
		if err != nil {
			return false, err
		}
		defer f.Close()
		if err := copyContent(f, destPath); err != nil {
			return false, err
		}
		// The metadata of the inode whose content was copied.
		n = statNode(name, &f.st)
		xattrFD = f.fd
	case unix.S_IFLNK:
		if n.Payload, err = parent.readlink(name); err != nil {
			return false, err
		}
		if err := unix.Symlink(n.Payload, destPath); err != nil {
			return false, &os.PathError{Op: "symlink", Path: destPath, Err: err}
		}
	case unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK:
		if err := unix.Mknod(destPath, typ|0o600, int(st.Rdev)); err != nil {
			return false, &os.PathError{Op: "mknod", Path: destPath, Err: err}
		}
	default:
		return false, fmt.Errorf("%s: unknown file type %#o", parent.entryPath(name), typ)
	}
	if n.Xattrs, err = readXattrs(xattrFD, parent.entryPath(name)); err != nil {
		return false, err
	}
	return true, SetMeta(destPath, n)
}

// copyEntries copies what is in the local directory ld into destPath.
// Entries that disappear meanwhile are left out and reported.
func (m *merger) copyEntries(ld *localDir, destPath string) error {
	names, err := ld.names()
	if err != nil {
		return err
	}
	for _, name := range names {
		rel := joinRel(ld.rel, name)
		for try := 1; ; try++ {
			hook(hookCopy, rel)
			st, err := ld.lstat(name)
			if err == nil {
				_, err = m.copy(ld, name, rel, destPath+"/"+name, st, true)
			}
			if errors.Is(err, errChanged) && try < retries {
				continue
			}
			if errors.Is(err, errVanished) {
				m.vanished(rel)
				// A partial copy of it must not stay.
				err = os.RemoveAll(destPath + "/" + name)
			}
			if err != nil {
				return err
			}
			break
		}
	}
	return nil
}

// copyContent writes what f holds to the new file destPath.
func copyContent(f *rawFile, destPath string) error {
	fd, err := unix.Open(destPath, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: destPath, Err: err}
	}
	out := os.NewFile(uintptr(fd), destPath)
	defer out.Close()
	if _, err := io.Copy(out, f); err != nil {
		return fmt.Errorf("copy %s to %s: %w", f.name, destPath, err)
	}
	return out.Close()
}

// SetMeta gives path (not followed) n's owner, mode, xattrs and mtime (also
// as the atime). The owner comes first because chown clears set-id bits;
// the mtime comes last because the other changes only touch the ctime.
// Xattrs under trusted.overlay. are not written: overlayfs would misread
// them in a directory it uses. Xattrs path has and n lacks stay.
func SetMeta(path string, n *erofs.Node) error {
	if err := os.Lchown(path, int(n.UID), int(n.GID)); err != nil {
		return err
	}
	if !n.IsSymlink() {
		if err := unix.Chmod(path, n.Mode&0o7777); err != nil {
			return &os.PathError{Op: "chmod", Path: path, Err: err}
		}
	}
	for _, x := range n.Xattrs {
		if ignoredXattr(x.Key) {
			continue
		}
		if err := unix.Lsetxattr(path, x.Key, []byte(x.Value), 0); err != nil {
			return fmt.Errorf("%s: set xattr %s: %w", path, x.Key, err)
		}
	}
	t := unix.Timespec{Sec: n.Mtime.Sec, Nsec: int64(n.Mtime.Nsec)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: path, Err: err}
	}
	return nil
}

// dropOtherXattrs removes the xattrs of path (not followed) that keep
// lacks, but ignored ones.
func dropOtherXattrs(path string, keep []erofs.Xattr) error {
	have, err := readXattrs(-1, path)
	if err != nil {
		return err
	}
	for _, x := range have {
		if !hasXattr(keep, x.Key) {
			if err := unix.Lremovexattr(path, x.Key); err != nil {
				return fmt.Errorf("%s: remove xattr %s: %w", path, x.Key, err)
			}
		}
	}
	return nil
}

func hasXattr(xs []erofs.Xattr, key string) bool {
	for _, x := range xs {
		if x.Key == key {
			return true
		}
	}
	return false
}
