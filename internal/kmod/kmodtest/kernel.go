// Package kmodtest gives tests a real distribution kernel module tree:
// Debian's 6.12 kernel package from the machine-wide cache that the VM
// tests use too (see internal/testkernel).
//
// A tree already in the cache is used as it is, without asking apt (the
// VM tests may have run depmod in it; tests that need a tree without
// depmod's files ask for PristineCopy). When the cache is empty the package
// is downloaded with apt; when that is impossible the test is skipped with
// the reason.
package kmodtest

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/testkernel"
)

// CacheDir is shared with the VM tests.
const CacheDir = testkernel.CacheDir

// RootEnv names an extracted kernel package to use instead of the cache.
const RootEnv = "CFS_KERNEL_ROOT"

// Tree is an extracted kernel package.
type Tree = testkernel.Tree

var once struct {
	sync.Mutex
	tree *Tree
	skip string
}

// Kernel returns the Debian kernel tree or skips the test.
func Kernel(t testing.TB) *Tree {
	t.Helper()
	once.Lock()
	defer once.Unlock()
	if once.tree == nil && once.skip == "" {
		once.tree, once.skip = find(t)
	}
	if once.tree == nil {
		t.Skipf("no Debian 6.12 kernel tree: %s", once.skip)
	}
	return once.tree
}

func find(t testing.TB) (*Tree, string) {
	if root := os.Getenv(RootEnv); root != "" {
		tr, err := testkernel.Open(root, "")
		if err != nil {
			return nil, fmt.Sprintf("%s=%s: %v", RootEnv, root, err)
		}
		return tr, ""
	}
	if tr := testkernel.Newest(CacheDir); tr != nil {
		return tr, ""
	}
	if testing.Short() {
		return nil, "not in " + CacheDir + " and -short forbids downloading it"
	}
	start := time.Now()
	tr, skip, err := testkernel.Fetch(CacheDir, t.Logf)
	switch {
	case err != nil:
		return nil, err.Error()
	case tr == nil:
		return nil, skip
	}
	t.Logf("fetched %s in %v", tr.Root, time.Since(start).Round(time.Second))
	return tr, ""
}

// isDepmodOutput reports whether depmod wrote name into a module directory.
func isDepmodOutput(name string) bool {
	if !strings.HasPrefix(name, "modules.") {
		return false
	}
	switch name {
	case "modules.builtin", "modules.builtin.modinfo", "modules.order":
		return false // shipped by the package
	}
	return true
}

// PristineCopy returns <base>/lib/modules/<kver>: the module directory as
// the package ships it, without anything depmod wrote, made of hard links
// (or copies across file systems) so that it costs little.
func PristineCopy(t testing.TB, tr *Tree) (base, modDir string) {
	t.Helper()
	base = t.TempDir()
	if err := pristineCopy(tr, base); err != nil {
		t.Fatalf("copying %s: %v", tr.ModulesDir, err)
	}
	return base, filepath.Join(base, "lib", "modules", tr.Version)
}

func pristineCopy(tr *Tree, base string) error {
	modDir := filepath.Join(base, "lib", "modules", tr.Version)
	return filepath.WalkDir(tr.ModulesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tr.ModulesDir, p)
		dst := filepath.Join(modDir, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case !d.Type().IsRegular():
			return nil // build/source symlinks
		case filepath.Dir(rel) == "." && isDepmodOutput(d.Name()):
			return nil
		}
		if err := os.Link(p, dst); err == nil {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
}

var depmodOnce struct {
	sync.Mutex
	dirs map[string]string
}

// Depmod returns the module directory of a copy of the tree on which
// `depmod -b` ran, or skips the test when depmod (package kmod) is missing.
// depmod decompresses every module, which takes a while, so for a tree in
// CacheDir the result is kept there (CacheDir/depmod-<pkgversion>/) for
// later runs. Callers must not change it.
func Depmod(t testing.TB, tr *Tree) (modDir string) {
	t.Helper()
	depmod, err := exec.LookPath("depmod")
	if err != nil {
		if depmod, err = exec.LookPath("/sbin/depmod"); err != nil {
			t.Skip("depmod not found (Debian package kmod)")
		}
	}
	depmodOnce.Lock()
	defer depmodOnce.Unlock()
	if d := depmodOnce.dirs[tr.ModulesDir]; d != "" {
		return d
	}
	var base string
	if filepath.Dir(tr.Root) == CacheDir {
		base = filepath.Join(CacheDir, "depmod-"+strings.TrimPrefix(filepath.Base(tr.Root), "root-"))
		unlock, err := testkernel.Lock(CacheDir)
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
	} else {
		base = t.TempDir() // not kept: the copy dies with this test
	}
	modDir = filepath.Join(base, "lib", "modules", tr.Version)
	if _, err := os.Stat(filepath.Join(modDir, "modules.dep")); err != nil {
		tmp, err := os.MkdirTemp(filepath.Dir(base), filepath.Base(base)+".tmp-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		if err := pristineCopy(tr, tmp); err != nil {
			t.Fatalf("copying %s: %v", tr.ModulesDir, err)
		}
		start := time.Now()
		if out, err := exec.Command(depmod, "-b", tmp, tr.Version).CombinedOutput(); err != nil {
			t.Fatalf("depmod -b %s %s: %v: %s", tmp, tr.Version, err, out)
		}
		t.Logf("depmod -b %s %s: %v", tmp, tr.Version, time.Since(start).Round(time.Millisecond))
		if _, err := os.Stat(filepath.Join(tmp, "lib", "modules", tr.Version, "modules.dep")); err != nil {
			t.Fatalf("depmod wrote no modules.dep: %v", err)
		}
		os.Chmod(tmp, 0o755)
		os.RemoveAll(base)
		if err := os.Rename(tmp, base); err != nil {
			t.Fatal(err)
		}
	}
	if depmodOnce.dirs == nil {
		depmodOnce.dirs = make(map[string]string)
	}
	if filepath.Dir(tr.Root) == CacheDir {
		depmodOnce.dirs[tr.ModulesDir] = modDir
	}
	return modDir
}
