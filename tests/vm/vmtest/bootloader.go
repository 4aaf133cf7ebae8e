package vmtest

import (
	"bytes"

	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
)

// BootEntry is the boot loader entry a test boots, read from a disk image
// the way a Boot Loader Specification boot loader reads it, so that QEMU
// can boot the kernel, initramfs and command line cfs-deploy installed.
type BootEntry struct {
	File    string   // entry file name in loader/entries (with any boot counter)
	Linux   string   // the entry's linux path, relative to the boot file system's root
	Initrd  []string // its initrd paths
	Options string   // its options lines joined by spaces: the kernel command line
	Default string   // loader.conf's default pattern ("" if none)
	Order   []string // every entry file in the boot loader's order

	Kernel     string // host copy of the kernel
	InitrdFile string // host copy of the initrds, concatenated as the boot loader loads them
	InitrdSize int64
}

// ReadBootEntry picks the entry of <bootDir>/loader/entries that
// systemd-boot 252 would boot and copies its kernel and initramfs out of
// img into dir. Like systemd-boot it sorts the entries by its menu rules
// (bootcfg.SortEntries: exhausted boot counters last, sort-key, version,
// ...) and boots the first, unless loader.conf has a default: a glob that
// 252 matches against the entry's ID, which there still includes the boot
// counter. bootDir is where the boot file system's root is in img
// ("/boot" when /boot is a directory of the root file system).
func ReadBootEntry(img, bootDir, dir string) (*BootEntry, error) {
	bootDir = strings.TrimSuffix(bootDir, "/")
	entriesDir := bootDir + "/loader/entries"
	ents, err := ListExt4Dir(img, entriesDir)
	if err != nil {
		return nil, fmt.Errorf("boot entries: %w", err)
	}
	var entries []*bootcfg.Entry
	for _, e := range ents {
		if e.Mode&0o170000 != 0o100000 || strings.HasPrefix(e.Name, ".") {
			continue
		}
		id, counter, ok := bootcfg.ParseEntryFileName(e.Name)
		if !ok {
			continue
		}
		text, err := ReadFileFromExt4(img, entriesDir+"/"+e.Name)
		if err != nil {
			return nil, err
		}
		be, err := bootcfg.ParseEntry(bytes.NewReader(text))
		if err != nil {
			return nil, fmt.Errorf("entry %s: %w", e.Name, err)
		}
		be.ID, be.Counter, be.File = id, counter, e.Name
		entries = append(entries, be)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("no entries in %s of %s", entriesDir, img)
	}
	bootcfg.SortEntries(entries)

	be := &BootEntry{}
	if conf, err := ReadFileFromExt4(img, bootDir+"/loader/loader.conf"); err == nil {
		be.Default = confValue(string(conf), "default")
	}
	be.File = entries[0].File
	if be.Default != "" {
		be.File = ""
		for _, e := range entries {
			if entryMatches(be.Default, e.File) {
				be.File = e.File
				break
			}
		}
		if be.File == "" {
			// systemd-boot falls back to the first entry.
			be.File = entries[0].File
		}
	}
	for _, e := range entries {
		be.Order = append(be.Order, e.File)
	}

	text, err := ReadFileFromExt4(img, entriesDir+"/"+be.File)
	if err != nil {
		return nil, err
	}
	var opts []string
	for _, l := range strings.Split(string(text), "\n") {
		key, value := splitConfLine(l)
		switch key {
		case "linux":
			be.Linux = value
		case "initrd":
			be.Initrd = append(be.Initrd, value)
		case "options":
			opts = append(opts, value)
		}
	}
	be.Options = strings.Join(opts, " ")
	if be.Linux == "" {
		return nil, fmt.Errorf("entry %s has no linux line:\n%s", be.File, text)
	}

	be.Kernel = filepath.Join(dir, "vmlinuz")
	if err := DumpFileFromExt4(img, path.Join(bootDir, be.Linux), be.Kernel); err != nil {
		return nil, fmt.Errorf("entry %s: linux %s: %w", be.File, be.Linux, err)
	}
	be.InitrdFile = filepath.Join(dir, "initrd")
	out, err := os.Create(be.InitrdFile)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	for i, p := range be.Initrd {
		part := filepath.Join(dir, fmt.Sprintf("initrd-%d", i))
		if err := DumpFileFromExt4(img, path.Join(bootDir, p), part); err != nil {
			return nil, fmt.Errorf("entry %s: initrd %s: %w", be.File, p, err)
		}
		b, err := os.ReadFile(part)
		if err != nil {
			return nil, err
		}
		if _, err := out.Write(b); err != nil {
			return nil, err
		}
		be.InitrdSize += int64(len(b))
	}
	return be, out.Close()
}

// entryMatches matches loader.conf's default against an entry as
// systemd-boot 252 does: the pattern is a glob on the entry's ID, which
// for a type #1 entry is its file name, boot counter included.
func entryMatches(pattern, file string) bool {
	for _, cand := range []string{file, strings.TrimSuffix(file, ".conf")} {
		if ok, _ := path.Match(pattern, cand); ok {
			return true
		}
	}
	return false
}

// splitConfLine splits a loader.conf or entry line into key and value
// (separated by spaces or tabs); comments and blank lines give "".
func splitConfLine(l string) (key, value string) {
	l = strings.TrimSpace(l)
	if l == "" || l[0] == '#' {
		return "", ""
	}
	key, value, _ = strings.Cut(strings.ReplaceAll(l, "\t", " "), " ")
	return key, strings.TrimSpace(value)
}

func confValue(text, key string) string {
	v := ""
	for _, l := range strings.Split(text, "\n") {
		if k, val := splitConfLine(l); k == key {
			v = val // a later line overrides
		}
	}
	return v
}
