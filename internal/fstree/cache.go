package fstree

import (
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// DigestCache remembers file digests from earlier scans so that a file
// that has not changed is not read again. Implementations must be safe for
// concurrent use.
type DigestCache interface {
	Lookup(k FileKey) (verity.Digest, bool)
	Store(k FileKey, d verity.Digest)
}

// FileKey identifies one version of a file's content: anything that writes
// to a file changes its mtime or ctime (and ctime cannot be set from user
// space), and the inode on its device pins which file it is.
type FileKey struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64 // nanoseconds since the epoch
}

// A file changed within racyWindow before the scan started may still be
// changing within the same timestamp tick, so its digest is not remembered
// (the next scan reads it again). Timestamps with nanoseconds come from the
// kernel's coarse clock (a few milliseconds per tick); whole-second
// timestamps may come from a filesystem that only keeps seconds (or two), so
// they get the long window.
var (
	racyWindow       = 50 * time.Millisecond
	racyWindowCoarse = 2 * time.Second
)

func fileKey(stx *unix.Statx_t) FileKey {
	ns := func(t unix.StatxTimestamp) int64 { return t.Sec*1e9 + int64(t.Nsec) }
	return FileKey{
		Dev:   unix.Mkdev(stx.Dev_major, stx.Dev_minor),
		Ino:   stx.Ino,
		Size:  int64(stx.Size),
		Mtime: ns(stx.Mtime),
		Ctime: ns(stx.Ctime),
	}
}

// cacheable reports whether k is old enough to be remembered.
func (s *scanner) cacheable(k FileKey) bool {
	window := racyWindow
	if k.Ctime%1e9 == 0 && k.Mtime%1e9 == 0 {
		window = racyWindowCoarse
	}
	limit := s.started.Add(-window).UnixNano()
	return k.Ctime < limit && k.Mtime < limit
}
