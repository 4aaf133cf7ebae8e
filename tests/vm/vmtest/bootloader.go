package vmtest

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
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

	Kernel     string // host copy of the kernel
	InitrdFile string // host copy of the initrds, concatenated as the boot loader loads them
	InitrdSize int64
}

// ReadBootEntry reads <bootDir>/loader/loader.conf and the entry its
// default names (a glob on entry file names, as systemd-boot matches it;
// without a default, the first entry in reverse name order, where newer
// versions sort), then copies the entry's kernel and initramfs out of img
// into dir. bootDir is where the boot file system's root is in img ("/boot"
// when /boot is a directory of the root file system).
func ReadBootEntry(img, bootDir, dir string) (*BootEntry, error) {
	bootDir = strings.TrimSuffix(bootDir, "/")
	entriesDir := bootDir + "/loader/entries"
	ents, err := ListExt4Dir(img, entriesDir)
	if err != nil {
		return nil, fmt.Errorf("boot entries: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name, ".conf") && e.Mode&0o170000 == 0o100000 {
			names = append(names, e.Name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no entries in %s of %s", entriesDir, img)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))

	be := &BootEntry{}
	if conf, err := ReadFileFromExt4(img, bootDir+"/loader/loader.conf"); err == nil {
		be.Default = confValue(string(conf), "default")
	}
	be.File = names[0]
	if be.Default != "" {
		be.File = ""
		for _, n := range names {
			if entryMatches(be.Default, n) {
				be.File = n
				break
			}
		}
		if be.File == "" {
			return nil, fmt.Errorf("loader.conf default %q matches none of the entries %v", be.Default, names)
		}
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

// entryMatches matches loader.conf's default against an entry file name:
// systemd-boot compares the pattern with the entry's ID, which for a type
// #1 entry is its file name without a boot counter ("+3-1").
func entryMatches(pattern, file string) bool {
	id := file
	if base, ok := strings.CutSuffix(file, ".conf"); ok {
		if i := strings.LastIndexByte(base, '+'); i >= 0 && isCounter(base[i+1:]) {
			base = base[:i]
		}
		id = base + ".conf"
	}
	for _, cand := range []string{id, strings.TrimSuffix(id, ".conf")} {
		if ok, _ := path.Match(pattern, cand); ok {
			return true
		}
	}
	return false
}

// isCounter reports whether s is "LEFT" or "LEFT-DONE" in digits.
func isCounter(s string) bool {
	left, done, hasDone := strings.Cut(s, "-")
	digits := func(x string) bool { return x != "" && strings.Trim(x, "0123456789") == "" }
	return digits(left) && (!hasDone || digits(done))
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
