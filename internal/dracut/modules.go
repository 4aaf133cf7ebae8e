package dracut

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/initramfs"
)

// ExtractModules copies the module directory of kernel kver from fsys (a
// commit's tree: usr/lib/modules/<kver> or lib/modules/<kver>) to
// dir/lib/modules/<kver>, runs depmod there if the tree has no
// modules.dep, and returns that directory, for Options.ModulesDir. dir
// must be empty or missing; the caller removes it. Symbolic links are
// copied as links (build and source links point outside and are never
// followed). The kernel image and an initramfs that a tree keeps in the
// module directory are left out: dracut needs neither.
func ExtractModules(fsys fs.FS, kver, dir string) (string, error) {
	if err := checkKernelVersion(kver); err != nil {
		return "", err
	}
	src, _, err := initramfs.FindModuleDir(fsys, "the tree", kver)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "lib", "modules", kver)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return "", fmt.Errorf("extract modules: %w", err)
	}
	err = fs.WalkDir(fsys, src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := p[len(src):]
		if rel == "" {
			return nil
		}
		rel = rel[1:]
		if rel == "vmlinuz" || rel == "initramfs.img" {
			return nil
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		switch {
		case d.IsDir():
			return os.Mkdir(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := fs.ReadLink(fsys, p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			return copyFile(fsys, p, target)
		default:
			return nil // device nodes and the like have no place here
		}
	})
	if err != nil {
		return "", fmt.Errorf("extract %s: %w", src, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "modules.dep")); errors.Is(err, fs.ErrNotExist) {
		// Distribution packages often ship no depmod output and leave it
		// to their install scripts.
		if _, err := exec.LookPath("depmod"); err != nil {
			return "", fmt.Errorf("%s has no modules.dep and depmod is not installed (package kmod): %w", path.Join("/", src), err)
		}
		if out, err := exec.Command("depmod", "-b", dir, kver).CombinedOutput(); err != nil {
			return "", fmt.Errorf("depmod -b %s %s: %v: %s", dir, kver, err, bytes.TrimSpace(out))
		}
	} else if err != nil {
		return "", err
	}
	return dst, nil
}

func copyFile(fsys fs.FS, src, dst string) error {
	in, err := fsys.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
