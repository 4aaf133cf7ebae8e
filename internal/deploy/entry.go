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
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// EntryPrefix starts the IDs of the boot entries cfs-deploy writes.
const EntryPrefix = "cfs-deploy-"

// EntryID is the boot entry ID of the deployment of an image: one entry
// per image, so rolling out the same image again rewrites its entry.
func EntryID(img verity.Digest) string { return EntryPrefix + img.String()[:12] }

// EntriesDir is the directory of BLS entries under a boot directory.
func EntriesDir(bootDir string) string { return filepath.Join(bootDir, "loader", "entries") }

// LoaderConfPath is systemd-boot's configuration under a boot directory.
func LoaderConfPath(bootDir string) string {
	return filepath.Join(bootDir, "loader", "loader.conf")
}

// newEntry composes the BLS entry of a deployment.
func newEntry(c *repo.Commit, id verity.Digest, tfs fs.FS, bf *bootFiles, root string, insecure bool, kargs bootcfg.Cmdline) (*bootcfg.Entry, error) {
	e := &bootcfg.Entry{
		ID:      EntryID(c.Image),
		Title:   entryTitle(tfs, c, id),
		Version: c.Version,
		Linux:   bf.kernel.rel,
		Initrd:  []string{bf.initramfs.rel},
	}
	// The version orders entries in menus; a commit without one is
	// ordered by its kernel.
	if e.Version == "" {
		e.Version = c.Kernel.Version
	}
	var cl bootcfg.Cmdline
	if err := cl.Replace("root", root); err != nil {
		return nil, fmt.Errorf("root=%s: %w", root, err)
	}
	args := append([]string{"rw", bootcfg.ComposefsArg(c.Image, insecure)}, paramStrings(kargs)...)
	for _, a := range args {
		if err := cl.Add(a); err != nil {
			return nil, fmt.Errorf("kernel argument %q: %w", a, err)
		}
	}
	e.SetCmdline(cl)
	return e, nil
}

func paramStrings(c bootcfg.Cmdline) []string {
	out := make([]string, len(c))
	for i, p := range c {
		out[i] = p.String()
	}
	return out
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

// writeEntry writes e into the entries directory. What was there for the
// same ID is remembered, so that a failure later on puts it back.
func writeEntry(bootDir string, e *bootcfg.Entry, u *undo) (string, error) {
	dir := EntriesDir(bootDir)
	if err := mkdirAll(dir, 0o755, u); err != nil {
		return "", err
	}
	old, err := entryFiles(dir, e.ID)
	if err != nil {
		return "", err
	}
	u.restore(func() error { return restoreEntry(dir, e.ID, old) })
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

// setDefault makes the entry id the default in loader.conf, keeping the
// file's other lines. The previous file is put back if the rollout fails
// after this.
func setDefault(bootDir, id string, u *undo) error {
	p := LoaderConfPath(bootDir)
	old, err := os.ReadFile(p)
	existed := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	lc, err := bootcfg.ParseLoaderConf(bytes.NewReader(old))
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	u.restore(func() error {
		if existed {
			return atomicfile.WriteFile(p, old, 0o644)
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	})
	lc.Default = id + ".conf"
	if err := bootcfg.WriteLoaderConf(p, lc); err != nil {
		return err
	}
	return nil
}
