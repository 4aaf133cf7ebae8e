package fstree

import (
	"os"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// parallelFileSize is the size from which a file is hashed by
// verity.DigestFile on all cores rather than by one worker: big enough that
// the goroutines pay off, small enough that a big file at the end of the
// scan does not leave the other cores idle.
const parallelFileSize = 8 << 20

// hashFile computes the fs-verity digest of the regular file of job j
// and, with a store, copies the file into it.
func (w *worker) hashFile(j job) error {
	defer j.dir.release()
	s := w.s
	if s.failed.Load() {
		return nil
	}
	n := j.node
	path := func() string { return pathJoin(j.dir.path, n.Name) }
	fd, err := w.openFile(j.dir.fd, cName(n))
	if err != nil {
		return scanError(path(), "open", err)
	}

	var (
		d  verity.Digest
		f  *os.File // only when the standard library needs one
		op = "hash"
	)
	if j.size >= parallelFileSize {
		f = os.NewFile(uintptr(fd), path())
		d, err = verity.DigestFile(f)
		if err == nil {
			var fi os.FileInfo
			fi, err = f.Stat()
			if err == nil && fi.Size() != j.size {
				err = errChanged
			}
		}
	} else {
		d, err = w.digest(fd, j.size)
	}
	if err == nil && s.opts.Store != nil {
		if f == nil {
			f = os.NewFile(uintptr(fd), path())
		}
		op = "store"
		_, err = s.opts.Store.PutFile(f, j.size, d)
	}
	if f != nil {
		f.Close()
	} else {
		unix.Close(fd)
	}
	if err != nil {
		return scanError(path(), op, err)
	}
	w.setDigest(n, d)
	if j.cache {
		s.opts.Cache.Store(j.key, d)
	}
	s.nBytes.Add(j.size)
	return nil
}

// cachedDigest gives n the digest the cache remembers for k, if its object
// is already stored and the store will reuse it (or no store is used); it
// reports whether it did.
func (w *worker) cachedDigest(n *erofs.Node, k FileKey) bool {
	s := w.s
	if s.opts.Cache == nil {
		return false
	}
	d, ok := s.opts.Cache.Lookup(k)
	if !ok || s.opts.Store != nil && !s.opts.Store.Reusable(d) {
		return false
	}
	w.setDigest(n, d)
	s.nCached.Add(1)
	return true
}

// digest hashes the size bytes of the file open at fd with the worker's
// hasher, failing if the file turns out shorter or longer.
func (w *worker) digest(fd int, size int64) (verity.Digest, error) {
	h := w.hasher
	h.Reset()
	left := size
	for {
		// Ask for one byte more than is left: getting it means the file
		// grew, and a short read of a regular file means end of file, so
		// the usual file takes a single read.
		want := len(w.buf)
		if left < int64(want) {
			want = int(left) + 1
		}
		k, err := unix.Read(fd, w.buf[:want])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return verity.Digest{}, err
		}
		if int64(k) > left {
			return verity.Digest{}, errChanged
		}
		h.Write(w.buf[:k])
		left -= int64(k)
		if k < want {
			if left != 0 {
				if k == 0 {
					return verity.Digest{}, errChanged
				}
				continue // a short read that is not the end: go on
			}
			return h.Sum(), nil
		}
	}
}

// setDigest records d in n. The object path is spelled in one allocation:
// with thousands of files, allocations are what the garbage collector
// charges for.
func (w *worker) setDigest(n *erofs.Node, d verity.Digest) {
	n.Digest = d
	n.Payload = d.ObjectPath()
}
