package etcmerge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"golang.org/x/sys/unix"
)

// Reading the local /etc: every entry is reached from the directory above
// it by an *at call that does not follow symlinks, so a symlink placed in
// /etc (or swapped in while the merge runs) is read as a symlink and never
// leads outside.

var (
	// errVanished: the entry disappeared between being listed and read.
	errVanished = errors.New("vanished while being read")
	// errChanged: the entry was replaced by another one (another inode or
	// type) between two reads; reading it again gives a consistent view.
	errChanged = errors.New("changed while being read")
)

// retries bounds how often an entry that keeps changing is read again.
const retries = 3

// hookPoint names where testHook runs.
type hookPoint int

const (
	hookStat hookPoint = iota // the diff is about to lstat a listed entry
	hookCopy                  // the merge is about to read an entry to copy it
	hookOpen                  // a directory or file that lstat saw is about to be opened
)

// testHook, when a test sets it, runs before a local entry is read, with
// the entry's path relative to /etc. Tests remove files there to act out
// a concurrent change.
var testHook func(point hookPoint, rel string)

func hook(p hookPoint, rel string) {
	if testHook != nil {
		testHook(p, rel)
	}
}

// localDir is an open directory of the local tree.
type localDir struct {
	f    *os.File
	fd   int
	path string // on disk, for messages and path-based xattr calls
	rel  string // relative to /etc, "" for /etc itself
}

func (d *localDir) close() { d.f.Close() }

// entryPath is the on-disk path of the entry name in d.
func (d *localDir) entryPath(name string) string { return d.path + "/" + name }

const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// openRoot opens the local /etc, which must be a directory (not a symlink
// to one).
func openRoot(path string) (*localDir, error) {
	fd, err := unix.Open(path, dirFlags, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &localDir{f: os.NewFile(uintptr(fd), path), fd: fd, path: path}, nil
}

// openDir opens the subdirectory name of d. It reports errVanished when
// name is gone and errChanged when it is no longer a directory.
func (d *localDir) openDir(name string) (*localDir, error) {
	hook(hookOpen, joinRel(d.rel, name))
	fd, err := unix.Openat(d.fd, name, dirFlags, 0)
	if err != nil {
		return nil, localErr("open", d.entryPath(name), err)
	}
	p := d.entryPath(name)
	return &localDir{f: os.NewFile(uintptr(fd), p), fd: fd, path: p, rel: joinRel(d.rel, name)}, nil
}

// reopen opens d again with its own file offset, for a second reader of
// its names.
func (d *localDir) reopen() (*localDir, error) {
	fd, err := unix.Openat(d.fd, ".", dirFlags, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.path, Err: err}
	}
	return &localDir{f: os.NewFile(uintptr(fd), d.path), fd: fd, path: d.path, rel: d.rel}, nil
}

// names lists d's entries, sorted in byte order like erofs children.
func (d *localDir) names() ([]string, error) {
	names, err := d.f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", d.path, err)
	}
	slices.Sort(names)
	return names, nil
}

// lstat returns the metadata of the entry name of d, not following it.
func (d *localDir) lstat(name string) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, localErr("lstat", d.entryPath(name), err)
	}
	return &st, nil
}

// readlink returns the target of the symlink name of d.
func (d *localDir) readlink(name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(d.fd, name, buf)
		if err != nil {
			// EINVAL: no longer a symlink.
			if err == unix.EINVAL {
				err = errChanged
			}
			return "", localErr("readlink", d.entryPath(name), err)
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// openFile opens the regular file name of d for reading and checks that
// it is still the inode st describes. O_NONBLOCK keeps the open from
// hanging should a FIFO have taken the file's place.
func (d *localDir) openFile(name string, st *unix.Stat_t) (*rawFile, error) {
	hook(hookOpen, joinRel(d.rel, name))
	p := d.entryPath(name)
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, localErr("open", p, err)
	}
	f := &rawFile{fd: fd, name: p}
	if err := unix.Fstat(fd, &f.st); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "fstat", Path: p, Err: err}
	}
	if f.st.Dev != st.Dev || f.st.Ino != st.Ino || f.st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("%s: %w", p, errChanged)
	}
	return f, nil
}

// rawFile is an open local regular file. Thousands of them are read, and
// a plain descriptor saves the system calls an os.File makes to find out
// whether it could use the poller.
type rawFile struct {
	fd   int
	name string
	st   unix.Stat_t // of the open file
}

func (f *rawFile) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(f.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, &os.PathError{Op: "read", Path: f.name, Err: err}
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f *rawFile) Close() error { return unix.Close(f.fd) }

// localErr wraps an error of reading the local tree, mapping the errnos
// that mean "someone changed it meanwhile" to errVanished and errChanged.
func localErr(op, path string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		err = errVanished
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ENXIO):
		// O_NOFOLLOW met a symlink, O_DIRECTORY a non-directory, or
		// the open met a socket: the entry's type changed.
		err = errChanged
	}
	return &os.PathError{Op: op, Path: path, Err: err}
}

// statNode returns st as the metadata part of a Node.
func statNode(name string, st *unix.Stat_t) *erofs.Node {
	return &erofs.Node{
		Name: name, Mode: st.Mode, UID: st.Uid, GID: st.Gid, Rdev: st.Rdev, Size: uint64(st.Size),
		Mtime: erofs.Timespec{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)},
	}
}

// readXattrs returns the xattrs of an open file (fd >= 0) or of path (not
// followed), sorted by key, without the ignored ones.
func readXattrs(fd int, path string) ([]erofs.Xattr, error) {
	list := func(buf []byte) (int, error) {
		if fd >= 0 {
			return unix.Flistxattr(fd, buf)
		}
		return unix.Llistxattr(path, buf)
	}
	get := func(key string, buf []byte) (int, error) {
		if fd >= 0 {
			return unix.Fgetxattr(fd, key, buf)
		}
		return unix.Lgetxattr(path, key, buf)
	}
	names, err := growRead(list)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil // no xattrs on this filesystem
	}
	if err != nil {
		return nil, localErr("listxattr", path, err)
	}
	var xs []erofs.Xattr
	for key := range strings.SplitSeq(string(bytes.TrimSuffix(names, []byte{0})), "\x00") {
		if key == "" || ignoredXattr(key) {
			continue
		}
		val, err := growRead(func(buf []byte) (int, error) { return get(key, buf) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, localErr("getxattr "+key, path, err)
		}
		xs = append(xs, erofs.Xattr{Key: key, Value: string(val)})
	}
	slices.SortFunc(xs, func(a, b erofs.Xattr) int { return strings.Compare(a.Key, b.Key) })
	return xs, nil
}

// growRead calls a listxattr/getxattr style function with a buffer large
// enough for its answer, which may grow between the calls.
func growRead(call func([]byte) (int, error)) ([]byte, error) {
	for range retries {
		n, err := call(nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		buf := make([]byte, n)
		n, err = call(buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, unix.ERANGE
}
