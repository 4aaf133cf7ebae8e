package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// SortKey is the sort-key of every entry cfs-deploy writes: entries with
// one sort before those without, and among equal sort-keys the higher
// version first, which is how the deployment order is kept.
const SortKey = "cfs-deploy"

// EntryID is the boot entry ID of the deployment of an image.
func EntryID(img verity.Digest) string { return sysroot.EntryID(img) }

// EntriesDir is the directory of BLS entries under a boot directory.
func EntriesDir(bootDir string) string { return filepath.Join(bootDir, sysroot.EntriesDir) }

// LoaderConfPath is systemd-boot's configuration under a boot directory.
func LoaderConfPath(bootDir string) string { return filepath.Join(bootDir, sysroot.LoaderConf) }

// newEntry composes the BLS entry of a deployment; its version is set
// when it is written, by its place in the order.
func newEntry(c *repo.Commit, id verity.Digest, tfs fs.FS, bf *bootFiles, cl bootcfg.Cmdline) *bootcfg.Entry {
	e := &bootcfg.Entry{
		ID:      EntryID(c.Image),
		Title:   entryTitle(tfs, c, id),
		SortKey: SortKey,
		Linux:   bf.kernel.rel,
		Initrd:  []string{bf.initramfs.rel},
	}
	e.SetCmdline(cl)
	return e
}

// entryTitle is the OS's PRETTY_NAME, the commit's version when the name
// does not already say it, and the short commit id, so that two rollouts
// of one OS can be told apart in the menu.
func entryTitle(tfs fs.FS, c *repo.Commit, id verity.Digest) string {
	name := ""
	for _, p := range []string{"usr/lib/os-release", "etc/os-release"} {
		if data, err := fs.ReadFile(tfs, p); err == nil {
			vals := parseOSRelease(data)
			if name = vals["PRETTY_NAME"]; name == "" {
				name = vals["NAME"]
			}
			if name != "" {
				break
			}
		}
	}
	if name == "" {
		name = "Linux"
	}
	if c.Version != "" && !strings.Contains(name, c.Version) {
		name += " " + c.Version
	}
	return name + " (" + id.String()[:12] + ")"
}

// parseOSRelease reads os-release(5): KEY=VALUE lines, values optionally
// in single or double quotes, backslash escapes inside double quotes.
func parseOSRelease(data []byte) map[string]string {
	vals := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		vals[k] = unquoteShell(v)
	}
	return vals
}

func unquoteShell(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return v[1 : len(v)-1]
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			if v[i] == '\\' && i+1 < len(v) && strings.IndexByte("\"\\$`", v[i+1]) >= 0 {
				i++
			}
			b.WriteByte(v[i])
		}
		return b.String()
	}
	return v
}

// entryFile is one file of an entry as it was before the rollout.
type entryFile struct {
	name string
	data []byte
}

// writeEntry writes e with the given version into the entries
// directory, keeping the boot counter of the entry's current file (if
// any). What was there for the same ID is remembered, so that a failure
// later on puts it back.
func (h *Host) writeEntry(e *bootcfg.Entry, version string, u *undo) (string, error) {
	dir := h.Entries()
	if err := mkdirAll(dir, 0o755, u); err != nil {
		return "", err
	}
	old, err := entryFiles(dir, e.ID)
	if err != nil {
		return "", err
	}
	u.restore(func() error { return restoreEntry(dir, e.ID, old) })
	e.SortKey, e.Version = SortKey, version
	if err := bootcfg.WriteEntry(dir, e); err != nil {
		return "", err
	}
	return filepath.Join(dir, e.File), nil
}

// entryFiles reads the files in dir that hold the entry id (under any
// boot counter).
func entryFiles(dir, id string) ([]entryFile, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []entryFile
	for _, de := range des {
		if got, _, ok := bootcfg.ParseEntryFileName(de.Name()); !ok || got != id || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, entryFile{de.Name(), data})
	}
	return out, nil
}

// restoreEntry puts back the files of entry id as they were: the old ones
// first, so the entry never goes missing when it existed, then the new
// one goes.
func restoreEntry(dir, id string, old []entryFile) error {
	keep := map[string]bool{}
	for _, f := range old {
		keep[f.name] = true
		if err := atomicfile.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			return err
		}
	}
	now, err := entryFiles(dir, id)
	if err != nil {
		return err
	}
	for _, f := range now {
		if !keep[f.name] {
			if err := os.Remove(filepath.Join(dir, f.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return atomicfile.SyncDir(dir)
}

// dropLoaderDefault removes a "default" line of loader.conf that names
// cfs-deploy's entries: the order lives in the entries, and in
// systemd-boot a default naming an entry defeats boot counting. A default
// naming something else is the admin's and stays; the returned warning
// says that it overrides the deployment order. The previous file is put
// back if the verb fails after this.
func (h *Host) dropLoaderDefault(u *undo) (warning string, err error) {
	p := LoaderConfPath(h.Boot)
	old, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	lc, err := bootcfg.ParseLoaderConf(bytes.NewReader(old))
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	if lc.Default == "" {
		return "", nil
	}
	if !strings.HasPrefix(lc.Default, sysroot.EntryIDPrefix) {
		return fmt.Sprintf("%s says \"default %s\", which overrides the deployment order cfs-deploy writes into the entries", p, lc.Default), nil
	}
	u.restore(func() error { return atomicfile.WriteFile(p, old, 0o644) })
	lc.Default = ""
	return "", bootcfg.WriteLoaderConf(p, lc)
}

// recordBootDir remembers the boot directory in the sysroot, so that the
// verbs run later find the entries without being told.
func (h *Host) recordBootDir() error {
	want := sysroot.BootDirRecord(h.Path, h.Boot)
	p := h.Join(sysroot.BootFile)
	if cur, err := os.ReadFile(p); err == nil && string(cur) == want {
		return nil
	}
	if err := atomicfile.WriteFile(p, []byte(want), 0o644); err != nil {
		return fmt.Errorf("record the boot directory: %w", err)
	}
	return nil
}
