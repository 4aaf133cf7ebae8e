package fstree

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"unsafe"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// worker holds the buffers one goroutine reuses for every job.
type worker struct {
	s          *scanner
	dents      []byte  // getdents64 records
	ents       []entry // entries of the directory being listed
	names      []byte  // their names, back to back
	link       []byte  // readlink target
	xattrList  []byte
	xattrValue []byte
	hasher     *verity.Hasher
	buf        []byte // file content
}

// entry is one directory entry before its node gets a permanent home.
type entry struct {
	node    erofs.Node // Name and Parent not yet set
	nameOff int
	nameLen int
	nlink   uint32
	dev     uint64
	ino     uint64
	key     FileKey
}

const (
	dentsBufSize = 32 << 10
	readBufSize  = 128 << 10
)

func newWorker(s *scanner) *worker {
	return &worker{
		s:          s,
		dents:      make([]byte, dentsBufSize),
		link:       make([]byte, unix.PathMax+1),
		xattrList:  make([]byte, initialXattrList),
		xattrValue: make([]byte, initialXattrValue),
		hasher:     verity.NewHasher(),
		buf:        make([]byte, readBufSize),
	}
}

// Layout of struct linux_dirent64.
const (
	direntReclen = 16
	direntName   = 19
)

// scanDir lists the directory of job j, records all its entries as
// children of j.node and returns the jobs for its subdirectories and for
// the files whose content must be hashed.
func (w *worker) scanDir(j job) (dirs, files []job, err error) {
	s := w.s
	n := j.node
	if s.failed.Load() {
		if j.dir != nil {
			j.dir.release()
		}
		return nil, nil, nil
	}
	h, err := w.openDir(j)
	if err != nil {
		return nil, nil, err
	}
	defer h.release()

	w.ents, w.names = w.ents[:0], w.names[:0]
	for {
		nb, err := unix.Getdents(h.fd, w.dents)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, nil, scanError(h.path, "read directory", err)
		}
		if nb == 0 {
			break
		}
		for off := 0; off < nb; {
			reclen := int(binary.NativeEndian.Uint16(w.dents[off+direntReclen:]))
			rec := w.dents[off+direntName : off+reclen]
			off += reclen
			name := rec[:bytes.IndexByte(rec, 0)]
			if len(name) == 0 || name[0] == '.' && (len(name) == 1 || len(name) == 2 && name[1] == '.') {
				continue
			}
			if err := w.addEntry(h, name, &rec[0]); err != nil {
				return nil, nil, err
			}
		}
	}
	s.nEntries.Add(int64(len(w.ents)))
	return w.finishDir(h, n)
}

// openDir opens the directory of job j: the root by path, any other
// relative to its parent without following symlinks.
func (w *worker) openDir(j job) (*dirHandle, error) {
	s := w.s
	var (
		fd   int
		path string
		err  error
	)
	if j.dir == nil {
		path = s.root
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, scanError(path, "open directory", err)
		}
		if err := w.statRoot(fd, j.node); err != nil {
			unix.Close(fd)
			return nil, err
		}
	} else {
		path = pathJoin(j.dir.path, j.node.Name)
		fd, err = openAt(j.dir.fd, cName(j.node), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
		j.dir.release()
		if err != nil {
			return nil, scanError(path, "open directory", err)
		}
	}
	h := &dirHandle{fd: fd, path: path, s: s}
	h.refs.Store(1)
	s.openDirs.Add(1)
	return h, nil
}

// statRoot fills the root node from its open descriptor. The root is the
// one entry whose symlink, if the caller named one, is followed.
func (w *worker) statRoot(fd int, n *erofs.Node) error {
	s := w.s
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, statxMask, &stx); err != nil {
		return scanError(s.root, "stat", err)
	}
	s.rootDev = unix.Mkdev(stx.Dev_major, stx.Dev_minor)
	w.fillNode(n, &stx)
	n.Nlink = 2
	if !s.opts.SkipXattrs {
		xs, err := w.readXattrs(&xattrTarget{fd: fd})
		if err != nil {
			return scanError(s.root, "read xattrs", err)
		}
		n.Xattrs = xs
	}
	s.nEntries.Add(1)
	return nil
}

// fillNode copies lstat metadata into n.
func (w *worker) fillNode(n *erofs.Node, stx *unix.Statx_t) {
	n.Mode = uint32(stx.Mode)
	n.Nlink = 1
	n.UID = stx.Uid
	n.GID = stx.Gid
	n.Size = stx.Size
	if !w.s.opts.UseEpoch {
		n.Mtime = erofs.Timespec{Sec: stx.Mtime.Sec, Nsec: stx.Mtime.Nsec}
	}
	if t := n.Mode & erofs.ModeTypeMask; t == erofs.ModeChr || t == erofs.ModeBlk {
		// The st_rdev encoding (glibc's, which is the kernel's
		// new_encode_dev for every number the kernel can hand out).
		n.Rdev = unix.Mkdev(stx.Rdev_major, stx.Rdev_minor)
	}
}

// addEntry records the entry name (cname points at the same bytes,
// NUL-terminated) of directory h in w.ents.
func (w *worker) addEntry(h *dirHandle, name []byte, cname *byte) error {
	s := w.s
	var stx unix.Statx_t
	if err := lstatAt(h.fd, cname, &stx); err != nil {
		return scanError(pathJoin(h.path, string(name)), "lstat", err)
	}
	typ := uint32(stx.Mode) & erofs.ModeTypeMask
	if s.opts.SkipDevices && (typ == erofs.ModeChr || typ == erofs.ModeBlk) {
		return nil
	}
	w.ents = append(w.ents, entry{
		nameOff: len(w.names),
		nameLen: len(name),
		nlink:   stx.Nlink,
		dev:     unix.Mkdev(stx.Dev_major, stx.Dev_minor),
		ino:     stx.Ino,
		key:     fileKey(&stx),
	})
	w.names = append(w.names, name...)
	w.names = append(w.names, 0)
	e := &w.ents[len(w.ents)-1]
	n := &e.node
	w.fillNode(n, &stx)

	var err error
	switch typ {
	case erofs.ModeSymlink:
		err = w.readSymlink(h, name, cname, n)
	case erofs.ModeReg:
		if n.Size > 0 && n.Size <= uint64(s.opts.InlineMax) {
			err = w.readInline(h, name, cname, n)
		}
	}
	if err != nil {
		return err
	}
	if !s.opts.SkipXattrs {
		t := xattrTarget{fd: -1, dirfd: h.fd, name: cname, nameStr: unsafeString(name), dirPath: h.path}
		xs, err := w.readXattrs(&t)
		if err != nil {
			return scanError(pathJoin(h.path, string(name)), "read xattrs", err)
		}
		n.Xattrs = xs
	}
	return nil
}

func (w *worker) readSymlink(h *dirHandle, name []byte, cname *byte, n *erofs.Node) error {
	k, err := readlinkAt(h.fd, cname, w.link)
	if err != nil {
		return scanError(pathJoin(h.path, string(name)), "read symlink", err)
	}
	if k >= len(w.link) { // cannot happen on Linux: targets are < PATH_MAX
		return scanError(pathJoin(h.path, string(name)), "read symlink", unix.ENAMETOOLONG)
	}
	n.Payload = string(w.link[:k])
	n.Size = uint64(k)
	return nil
}

// readInline reads the content of a small regular file into n.Content.
func (w *worker) readInline(h *dirHandle, name []byte, cname *byte, n *erofs.Node) error {
	fd, err := w.openFile(h.fd, cname)
	if err != nil {
		return scanError(pathJoin(h.path, string(name)), "open", err)
	}
	// One byte more than expected tells a file that grew.
	k, err := readFull(fd, w.buf[:n.Size+1])
	unix.Close(fd)
	if err == nil && uint64(k) != n.Size {
		err = errChanged
	}
	if err != nil {
		return scanError(pathJoin(h.path, string(name)), "read", err)
	}
	n.Content = slices.Clone(w.buf[:k])
	w.s.nBytes.Add(int64(k))
	return nil
}

// openFile opens a regular file for reading without touching its atime.
// O_NONBLOCK keeps the open from hanging if the file was replaced by a
// FIFO since it was listed; it changes nothing for regular files.
func (w *worker) openFile(dirfd int, cname *byte) (int, error) {
	const flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK
	if !w.s.noNoatime.Load() {
		fd, err := openAt(dirfd, cname, flags|unix.O_NOATIME)
		if err != unix.EPERM {
			return fd, err
		}
		// O_NOATIME needs ownership or CAP_FOWNER.
		w.s.noNoatime.Store(true)
	}
	return openAt(dirfd, cname, flags)
}

// cName returns n.Name as a NUL-terminated C string. It relies on
// finishDir having put a NUL after every name.
func cName(n *erofs.Node) *byte { return unsafe.StringData(n.Name) }

// finishDir gives the listed entries their permanent nodes, sorted by
// name, and returns the follow-up jobs.
func (w *worker) finishDir(h *dirHandle, n *erofs.Node) (dirs, files []job, err error) {
	s := w.s
	// One allocation for all names. Each is followed by a NUL, so later
	// jobs can hand the kernel a pointer into the string (cName).
	names := string(w.names)
	slab := make([]erofs.Node, len(w.ents))
	children := make([]*erofs.Node, len(w.ents))
	subdirs := 0
	for i := range w.ents {
		e := &w.ents[i]
		c := &slab[i]
		*c = e.node
		c.Name = names[e.nameOff : e.nameOff+e.nameLen]
		c.Parent = n
		children[i] = c

		switch c.Type() {
		case erofs.ModeDir:
			subdirs++
			c.Nlink = 2
			if s.opts.OneFileSystem && e.dev != s.rootDev {
				continue
			}
			dirs = append(dirs, job{dir: h, node: c})
		case erofs.ModeReg:
			hash := s.digests && c.Size > uint64(s.opts.InlineMax)
			if e.nlink > 1 && (hash || s.opts.Hardlinks) {
				if !s.links.add(e.dev, e.ino, c) {
					hash = false // another link to it is hashed
				}
			}
			if hash && w.cachedDigest(c, e.key) {
				hash = false
			}
			if hash {
				files = append(files, job{dir: h, node: c, size: int64(c.Size),
					key: e.key, cache: s.opts.Cache != nil && s.cacheable(e.key)})
			}
		default:
			if e.nlink > 1 && s.opts.Hardlinks && !c.IsWhiteout() {
				s.links.add(e.dev, e.ino, c)
			}
		}
	}
	slices.SortFunc(children, func(a, b *erofs.Node) int { return strings.Compare(a.Name, b.Name) })
	n.Children = children
	n.Nlink = uint32(2 + subdirs)

	// Each job holds a reference to h until it ends.
	h.refs.Add(int32(len(dirs) + len(files)))
	return dirs, files, nil
}
