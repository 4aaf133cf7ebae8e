package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
)

// undo records what a rollout created so that a failure can take it back.
// Only things that did not exist before the rollout are recorded; an
// existing deployment, /var, or boot file is never removed.
type undo struct {
	restores  []func() error // put back entries and loader.conf; run first, newest first
	bootFiles []string       // new files in the boot directory
	trees     []string       // new state directories (removed with contents)
	dirs      []string       // new directories, removed only if empty
}

func (u *undo) restore(f func() error) { u.restores = append(u.restores, f) }
func (u *undo) bootFile(p string)      { u.bootFiles = append(u.bootFiles, p) }
func (u *undo) tree(p string)          { u.trees = append(u.trees, p) }
func (u *undo) dir(p string)           { u.dirs = append(u.dirs, p) }

// run takes everything back. Boot files go only if no entry still refers
// to them (after the restores, no entry of this rollout is left), so
// whatever the boot loader can see stays bootable.
func (u *undo) run(bootDir string) error {
	var errs []error
	for i := len(u.restores) - 1; i >= 0; i-- {
		if err := u.restores[i](); err != nil {
			errs = append(errs, err)
		}
	}
	if len(u.bootFiles) > 0 {
		refs := referencedBootFiles(bootDir)
		for _, p := range u.bootFiles {
			if refs[p] {
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	for i := len(u.trees) - 1; i >= 0; i-- {
		if err := os.RemoveAll(u.trees[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(u.dirs) - 1; i >= 0; i-- {
		os.Remove(u.dirs[i]) // fails, as it should, unless empty
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("undo the rollout: %w", err)
	}
	return nil
}

// referencedBootFiles returns the absolute paths of the kernels and
// initramfs images that the entries in bootDir name.
func referencedBootFiles(bootDir string) map[string]bool {
	refs := map[string]bool{}
	// Entries that cannot be parsed are skipped: the boot loader cannot
	// use them either.
	entries, _ := bootcfg.ReadEntries(filepath.Join(bootDir, "loader", "entries"))
	for _, e := range entries {
		for _, p := range append([]string{e.Linux, e.EFI, e.Devicetree}, e.Initrd...) {
			if p != "" {
				refs[filepath.Join(bootDir, filepath.FromSlash(p))] = true
			}
		}
	}
	return refs
}

// mkdirAll is os.MkdirAll that records the directories it creates.
func mkdirAll(dir string, perm os.FileMode, u *undo) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: exists and is not a directory", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirAll(parent, perm, u); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil {
		if errors.Is(err, os.ErrExist) {
			if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
				return nil
			}
		}
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	u.dir(dir)
	return nil
}
