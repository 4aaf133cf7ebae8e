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

// racyWindow: a file changed within this long before the scan started may
// still be changing within the same timestamp tick, so its digest is not
// remembered (the next scan reads it again).
var racyWindow = 2 * time.Second

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
	return k.Ctime < s.started.UnixNano()-int64(racyWindow) && k.Mtime < s.started.UnixNano()-int64(racyWindow)
}
