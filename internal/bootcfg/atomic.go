package bootcfg

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
)

// tempPrefix starts every temporary file name; ReadEntries and boot
// loaders skip names starting with '.'.
const tempPrefix = "."

// writeFileAtomic replaces dir/name with data: temporary file in dir,
// fsync, rename over name, fsync dir. A boot loader running after a crash
// at any point finds the old file or the new one, complete.
//
// The temporary file is created with mode 0644 directly instead of being
// chmod-ed afterwards: on FAT (the ESP) chmod to a mode the mount options
// cannot represent fails with EPERM, while a create just gets the mount's
// mode.
func writeFileAtomic(dir, name string, data []byte) (err error) {
	f, tmp, err := createTemp(dir, name)
	if err != nil {
		return err
	}
	renamed := false
	defer func() {
		if err != nil && !renamed {
			f.Close() // may already be closed; the error adds nothing
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	dest := filepath.Join(dir, name)
	if err := os.Rename(tmp, dest); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, dest, err)
	}
	// The new file is in place; a failed directory sync is reported,
	// but there is nothing left to clean up.
	renamed = true
	return syncDir(dir)
}

func createTemp(dir, name string) (*os.File, string, error) {
	for range 100 {
		tmp := filepath.Join(dir, tempPrefix+name+".tmp-"+strconv.FormatUint(rand.Uint64(), 36))
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("create temporary file for %s: %w", filepath.Join(dir, name), err)
		}
		return f, tmp, nil
	}
	return nil, "", fmt.Errorf("create temporary file for %s: too many name collisions", filepath.Join(dir, name))
}

// syncDir makes renames and removals in dir durable.
func syncDir(dir string) error {
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
