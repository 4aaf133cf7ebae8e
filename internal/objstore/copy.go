package objstore

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// copyFile makes dst, an empty file, a copy of the first size bytes of
// src without using either file's offset. It tries, in order: sharing
// src's extents (FICLONE: instant on btrfs, XFS and bcachefs), an
// in-kernel copy (copy_file_range: no trip through user space, and
// server-side on NFS), and a plain read/write copy.
func copyFile(dst, src *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	dfd, sfd := int(dst.Fd()), int(src.Fd())

	if kernelCopy && unix.IoctlFileClone(dfd, sfd) == nil {
		// A clone takes the whole source: cut it to the size asked for,
		// and refuse a source that is shorter.
		var st unix.Stat_t
		if err := unix.Fstat(dfd, &st); err != nil {
			return err
		}
		if st.Size < size {
			return fmt.Errorf("source is %d bytes, expected %d: %w", st.Size, size, errSourceChanged)
		}
		if st.Size > size {
			return unix.Ftruncate(dfd, size)
		}
		return nil
	}

	if kernelCopy {
		done, err := copySparse(dfd, sfd, size)
		if done || err != nil {
			return err
		}
	}

	var off int64
	for kernelCopy && off < size {
		roff := off
		n, err := unix.CopyFileRange(sfd, &roff, dfd, nil, int(min(size-off, 1<<30)), 0)
		if err != nil {
			if isCopyUnsupported(err) {
				break // finish with read/write from off
			}
			return fmt.Errorf("copy_file_range: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("source ended at %d bytes, expected %d: %w", off, size, errSourceChanged)
		}
		off += int64(n)
	}
	if off == size {
		return nil
	}

	if _, err := dst.Seek(off, io.SeekStart); err != nil {
		return err
	}
	n, err := io.Copy(onlyWriter{dst}, io.NewSectionReader(src, off, size-off))
	if err != nil {
		return err
	}
	if off+n != size {
		return fmt.Errorf("source ended at %d bytes, expected %d: %w", off+n, size, errSourceChanged)
	}
	return nil
}

// kernelCopy is switched off by tests to reach the read/write fallback.
var kernelCopy = true

var errSourceChanged = errors.New("source file changed while it was copied")

// isCopyUnsupported reports whether copy_file_range refused this pair of
// files (rather than failing on the data), so a plain copy should be tried.
func isCopyUnsupported(err error) bool {
	switch {
	case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EXDEV),
		errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP),
		errors.Is(err, unix.EPERM), errors.Is(err, unix.EBADF):
		return true
	}
	return false
}

// onlyWriter hides dst's ReadFrom, which would try copy_file_range and
// sendfile again after they were found not to work.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// copySparse copies only the data ranges of src (SEEK_DATA/SEEK_HOLE), so
// that holes stay holes: a sparse disk image of 1 GiB apparent size must
// not become a gigabyte of zeros in the store. done is false when the
// filesystems cannot do this and the caller should copy everything.
func copySparse(dfd, sfd int, size int64) (done bool, err error) {
	// Holes read as zeros, so a source that shrank would silently be
	// padded: it must still hold the size bytes that were hashed.
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return false, err
	}
	if st.Size < size {
		return false, fmt.Errorf("source is %d bytes, expected %d: %w", st.Size, size, errSourceChanged)
	}
	// SEEK_DATA and SEEK_HOLE move the offset, which PutFile promises to
	// leave alone.
	saved, err := unix.Seek(sfd, 0, io.SeekCurrent)
	if err != nil {
		return false, nil
	}
	defer unix.Seek(sfd, saved, io.SeekStart)
	var pos int64
	for pos < size {
		start, err := unix.Seek(sfd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			if pos == 0 && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
				return false, nil
			}
			return false, fmt.Errorf("seek data: %w", err)
		}
		if start >= size {
			break
		}
		end, err := unix.Seek(sfd, start, unix.SEEK_HOLE)
		if err != nil {
			return false, fmt.Errorf("seek hole: %w", err)
		}
		end = min(end, size)
		for start < end {
			roff, woff := start, start
			n, err := unix.CopyFileRange(sfd, &roff, dfd, &woff, int(min(end-start, 1<<30)), 0)
			if err != nil {
				if pos == 0 && start == 0 && isCopyUnsupported(err) {
					return false, nil
				}
				return false, fmt.Errorf("copy_file_range: %w", err)
			}
			if n == 0 {
				return false, fmt.Errorf("source ended at %d bytes, expected %d: %w", start, size, errSourceChanged)
			}
			start += int64(n)
		}
		pos = end
	}
	if err := unix.Ftruncate(dfd, size); err != nil {
		return false, fmt.Errorf("truncate: %w", err)
	}
	return true, nil
}
