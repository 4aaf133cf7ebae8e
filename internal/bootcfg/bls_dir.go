package bootcfg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
)

// ReadEntries reads every entry file (*.conf, any case) in dir, the
// loader/entries directory, and returns them in boot menu order. Like
// systemd-boot it skips names starting with '.' (which includes
// interrupted temporary files) or "auto-", and anything that is not a
// regular file.
//
// A file that cannot be read or parsed does not hide the others: the
// entries that could be read are returned together with an error that
// names each bad file. A missing dir is an error wrapping fs.ErrNotExist.
func ReadEntries(dir string) ([]*Entry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read boot entries: %w", err)
	}
	var entries []*Entry
	var errs []error
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".") || strings.HasPrefix(strings.ToLower(name), "auto-") {
			continue
		}
		id, counter, ok := ParseEntryFileName(name)
		if !ok {
			continue
		}
		e, err := readEntryFile(filepath.Join(dir, name))
		if errors.Is(err, errNotRegular) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		e.ID, e.Counter, e.File = id, counter, name
		entries = append(entries, e)
	}
	SortEntries(entries)
	return entries, errors.Join(errs...)
}

var errNotRegular = errors.New("not a regular file")

func readEntryFile(path string) (*Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read boot entry: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read boot entry: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, errNotRegular
	}
	e, err := ParseEntry(f)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return e, nil
}

// WriteEntry writes e to dir as e.FileName(), atomically, and then removes
// any other file for the same ID (the same entry under another boot
// counter), so the loader never sees two copies after it returns. A crash
// between the two steps can leave both; each is a complete entry.
// On success e.File is set.
func WriteEntry(dir string, e *Entry) error {
	if err := e.Validate(); err != nil {
		return fmt.Errorf("write boot entry: %w", err)
	}
	name := e.FileName()
	if err := atomicfile.WriteFile(filepath.Join(dir, name), e.Marshal(), 0o644); err != nil {
		return fmt.Errorf("write boot entry %s: %w", e.ID, err)
	}
	e.File = name
	removed, err := removeEntryFiles(dir, e.ID, name)
	if err != nil {
		return fmt.Errorf("write boot entry %s: %w", e.ID, err)
	}
	if removed > 0 {
		return atomicfile.SyncDir(dir)
	}
	return nil
}

// RemoveEntry deletes the entry with the given ID, whatever its boot
// counter, and syncs dir. If there is none, the error wraps
// fs.ErrNotExist.
func RemoveEntry(dir, id string) error {
	removed, err := removeEntryFiles(dir, id, "")
	if err != nil {
		return fmt.Errorf("remove boot entry %s: %w", id, err)
	}
	if removed == 0 {
		return fmt.Errorf("remove boot entry %s: %w", id, fs.ErrNotExist)
	}
	return atomicfile.SyncDir(dir)
}

// removeEntryFiles removes the files in dir whose entry ID is id, except
// the one named keep.
func removeEntryFiles(dir, id, keep string) (int, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, de := range des {
		name := de.Name()
		if name == keep || strings.HasPrefix(name, ".") {
			continue
		}
		if got, _, ok := ParseEntryFileName(name); !ok || got != id {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, err
		}
		n++
	}
	return n, nil
}

// Validate checks that e can be written and read back unchanged, and
// that a boot loader has something to boot.
func (e *Entry) Validate() error {
	if err := CheckEntryID(e.ID); err != nil {
		return err
	}
	if c := e.Counter; c != nil && (c.Left < 0 || c.Done < 0) {
		return fmt.Errorf("entry %s: negative boot counter %+v", e.ID, *c)
	}
	if e.Linux == "" && e.EFI == "" && !e.hasExtra("uki") {
		return fmt.Errorf("entry %s: no linux, efi or uki to boot", e.ID)
	}
	check := func(key, value string, required bool) error {
		if required && value == "" {
			return fmt.Errorf("entry %s: empty %s", e.ID, key)
		}
		if err := checkValue(value); err != nil {
			return fmt.Errorf("entry %s: %s %q: %w", e.ID, key, shorten(value), err)
		}
		return nil
	}
	for _, f := range []Field{
		{keyTitle, e.Title}, {keyVersion, e.Version}, {keyMachineID, e.MachineID},
		{keySortKey, e.SortKey}, {keyLinux, e.Linux}, {keyEFI, e.EFI},
		{keyDevicetree, e.Devicetree}, {keyArchitecture, e.Architecture},
	} {
		if err := check(f.Key, f.Value, false); err != nil {
			return err
		}
	}
	for _, v := range e.Initrd {
		if err := check(keyInitrd, v, true); err != nil {
			return err
		}
	}
	for _, v := range e.Options {
		if err := check(keyOptions, v, false); err != nil {
			return err
		}
	}
	for _, f := range e.Extra {
		if err := checkExtraKey(f.Key); err != nil {
			return fmt.Errorf("entry %s: %w", e.ID, err)
		}
		if err := check(f.Key, f.Value, false); err != nil {
			return err
		}
	}
	return nil
}

func (e *Entry) hasExtra(key string) bool {
	for _, f := range e.Extra {
		if f.Key == key && f.Value != "" {
			return true
		}
	}
	return false
}

// checkValue rejects what the line syntax cannot carry: line breaks and
// other control characters, and spaces at either end, which reading trims.
func checkValue(v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("not valid UTF-8")
	}
	for _, r := range v {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return fmt.Errorf("contains control character %q", r)
		}
	}
	if strings.Trim(v, " \t") != v {
		return fmt.Errorf("starts or ends with whitespace")
	}
	return nil
}

func checkExtraKey(k string) error {
	switch k {
	case "":
		return fmt.Errorf("extra field with empty key")
	case keyTitle, keyVersion, keyMachineID, keySortKey, keyOptions, keyLinux,
		keyInitrd, keyEFI, keyDevicetree, keyArchitecture:
		return fmt.Errorf("extra field %q has a field of its own", k)
	}
	if k[0] == '#' {
		return fmt.Errorf("extra field key %q starts with '#'", k)
	}
	if err := checkValue(k); err != nil || strings.ContainsAny(k, " \t") {
		return fmt.Errorf("extra field key %q must be printable text without whitespace", k)
	}
	return nil
}
