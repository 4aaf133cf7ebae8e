// Package filelock takes flock(2) locks: advisory, released when the file
// is closed, including by a crash, so a killed process never leaves a
// stale lock behind.
package filelock

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Flock takes lock how (unix.LOCK_SH or unix.LOCK_EX) on f, waiting for
// it; an interrupted wait is resumed.
func Flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// Exclusive waits for an exclusive lock on path, creating the file if
// needed. The returned func releases it.
func Exclusive(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := Flock(f, unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
