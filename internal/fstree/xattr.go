package fstree

import (
	"bytes"
	"errors"
	"sync/atomic"
	"unsafe"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"golang.org/x/sys/unix"
)

// xattrCaps remembers that the kernel lacks listxattrat/getxattrat (before
// Linux 6.13), after which entries are addressed by full path instead.
type xattrCaps struct{ noAt atomic.Bool }

// xattrTarget says how to reach the entry whose attributes are read: by
// an open descriptor of the entry itself (fd >= 0), or as name in dirfd,
// with the full path for kernels without the *xattrat calls.
type xattrTarget struct {
	fd      int
	dirfd   int
	name    *byte // NUL-terminated
	nameStr string
	dirPath string
}

func (t *xattrTarget) path() string { return pathJoin(t.dirPath, t.nameStr) }

// First sizes of a worker's xattr buffers: most entries have no xattrs or
// a short SELinux label or capability set. A buffer that is too small
// costs one more call to learn the size, then stays grown.
const (
	initialXattrList  = 256
	initialXattrValue = 256
)

// readXattrs returns the entry's extended attributes in the order the
// filesystem lists them, filtered by the options.
func (w *worker) readXattrs(t *xattrTarget) ([]erofs.Xattr, error) {
	n, err := w.listXattrs(t)
	if errors.Is(err, unix.EOPNOTSUPP) { // the filesystem has no xattrs
		return nil, nil
	}
	if err != nil || n == 0 {
		return nil, err
	}
	var xs []erofs.Xattr
	list := w.xattrList[:n]
	for len(list) > 0 {
		end := bytes.IndexByte(list, 0)
		if end < 0 {
			end = len(list) // not reached: the kernel terminates every name
		}
		key := list[:end]
		keyPtr := &list[0]
		list = list[min(end+1, len(list)):]
		if len(key) == 0 || w.s.opts.UserXattrs && !bytes.HasPrefix(key, []byte("user.")) {
			continue
		}
		vn, err := w.getXattr(t, keyPtr, key)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since it was listed
		}
		if err != nil {
			return nil, err
		}
		if xs == nil {
			xs = make([]erofs.Xattr, 0, bytes.Count(list, []byte{0})+1)
		}
		xs = append(xs, erofs.Xattr{Key: string(key), Value: string(w.xattrValue[:vn])})
	}
	return xs, nil
}

// listXattrs fills w.xattrList, growing it as needed.
func (w *worker) listXattrs(t *xattrTarget) (int, error) {
	for {
		n, err := w.listXattrsOnce(t, w.xattrList)
		if !errors.Is(err, unix.ERANGE) {
			return n, err
		}
		size, err := w.listXattrsOnce(t, nil)
		if err != nil {
			return 0, err
		}
		w.xattrList = make([]byte, max(size, 2*len(w.xattrList)))
	}
}

func (w *worker) listXattrsOnce(t *xattrTarget, buf []byte) (int, error) {
	if t.fd >= 0 {
		return unix.Flistxattr(t.fd, buf)
	}
	if !w.s.xattrs.noAt.Load() {
		n, err := listxattrAt(t.dirfd, t.name, buf)
		if err != unix.ENOSYS {
			return n, err
		}
		w.s.xattrs.noAt.Store(true)
	}
	return unix.Llistxattr(t.path(), buf)
}

// getXattr reads the value of attribute key (keyPtr points at it,
// NUL-terminated) into w.xattrValue, growing it as needed.
func (w *worker) getXattr(t *xattrTarget, keyPtr *byte, key []byte) (int, error) {
	for {
		n, err := w.getXattrOnce(t, keyPtr, key, w.xattrValue)
		if !errors.Is(err, unix.ERANGE) {
			return n, err
		}
		size, err := w.getXattrOnce(t, keyPtr, key, nil)
		if err != nil {
			return 0, err
		}
		w.xattrValue = make([]byte, max(size, 2*len(w.xattrValue)))
	}
}

func (w *worker) getXattrOnce(t *xattrTarget, keyPtr *byte, key, buf []byte) (int, error) {
	if t.fd >= 0 {
		return unix.Fgetxattr(t.fd, string(key), buf)
	}
	if !w.s.xattrs.noAt.Load() {
		n, err := getxattrAt(t.dirfd, t.name, keyPtr, buf)
		if err != unix.ENOSYS {
			return n, err
		}
		w.s.xattrs.noAt.Store(true)
	}
	return unix.Lgetxattr(t.path(), string(key), buf)
}

// unsafeString views b as a string without copying; b must not change
// while the string is in use.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
