// Package atomicfile writes a file so that readers see either the old
// content or the complete new content, never a partial write: data goes to a
// temporary file in the same directory, which is synced and renamed over the
// destination, and the directory is synced so the rename survives a crash.
package atomicfile

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/crashpoint"
)

// File is a pending replacement of a destination path.
type File struct {
	*os.File
	dest string
	done bool
}

// Create starts writing dest. The caller must call Commit or Abort.
func Create(dest string, perm os.FileMode) (*File, error) {
	dir, base := filepath.Split(dest)
	if dir == "" {
		dir = "."
	}
	// Create with the final mode instead of chmod afterwards: a FAT ESP
	// refuses chmod, and the umask applies as for any new file.
	var f *os.File
	var err error
	for range 100 {
		name := filepath.Join(dir, fmt.Sprintf(".%s.tmp-%d", base, rand.Uint32()))
		f, err = os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create temporary file for %s: %w", dest, err)
	}
	return &File{File: f, dest: dest}, nil
}

// Commit syncs the data and moves it into place.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("commit %s: already finished", f.dest)
	}
	f.done = true
	tmp := f.Name()
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	// Crash tests stop here: the new content is complete under its
	// temporary name, the destination still holds the old.
	crashpoint.Here("atomicfile-before-rename")
	if err := os.Rename(tmp, f.dest); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s to %s: %w", tmp, f.dest, err)
	}
	return SyncDir(filepath.Dir(f.dest))
}

// Abort discards the pending file; after Commit it does nothing, so it can
// be deferred.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.Close()
	os.Remove(f.Name())
}

// SyncDir fsyncs a directory so that entries created or renamed in it are
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// WriteFile atomically replaces dest with data.
func WriteFile(dest string, data []byte, perm os.FileMode) error {
	f, err := Create(dest, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return f.Commit()
}
