// Package kmodtest gives tests a real distribution kernel module tree:
// Debian's 6.12 kernel package, extracted into the machine-wide cache that
// the VM tests use too (see tests/vm/vmtest):
//
//	/var/cache/cfs-deploy-vm/.lock                         flock(2) while a tree is set up
//	/var/cache/cfs-deploy-vm/linux-image-<pkgversion>.deb  the package apt-get downloaded
//	/var/cache/cfs-deploy-vm/root-<pkgversion>/            dpkg-deb -x of it
//
// A tree already in the cache is used as it is (the VM tests may have run
// depmod in it; tests that need a tree without depmod's files ask for
// PristineCopy). When the cache is empty the package is downloaded with apt;
// when that is impossible the test is skipped with the reason.
package kmodtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// CacheDir is shared with the VM tests.
const CacheDir = "/var/cache/cfs-deploy-vm"

// RootEnv names an extracted kernel package to use instead of the cache.
const RootEnv = "CFS_KERNEL_ROOT"

const metaPackage = "linux-image-6.12-amd64"

// Tree is an extracted kernel package.
type Tree struct {
	Root    string // the package's files
	Version string // kernel release, e.g. 6.12.117+deb12-amd64
	ModDir  string // Root/usr/lib/modules/<Version> or Root/lib/modules/<Version>
}

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
		tr, err := open(root)
		if err != nil {
			return nil, fmt.Sprintf("%s=%s: %v", RootEnv, root, err)
		}
		return tr, ""
	}
	if tr := newestCached(); tr != nil {
		return tr, ""
	}
	if testing.Short() {
		return nil, "not in " + CacheDir + " and -short forbids downloading it"
	}
	start := time.Now()
	tr, err := fetch()
	if err != nil {
		return nil, err.Error()
	}
	t.Logf("fetched %s in %v", tr.Root, time.Since(start).Round(time.Second))
	return tr, ""
}

// open checks an extracted package: one boot/vmlinuz-* and its modules.
func open(root string) (*Tree, error) {
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("want one boot/vmlinuz-*, found %d", len(images))
	}
	kver := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	for _, d := range []string{"usr/lib/modules", "lib/modules"} {
		dir := filepath.Join(root, d, kver)
		if _, err := os.Stat(filepath.Join(dir, "modules.builtin")); err == nil {
			return &Tree{Root: root, Version: kver, ModDir: dir}, nil
		}
	}
	return nil, fmt.Errorf("no modules for %s", kver)
}

func newestCached() *Tree {
	roots, _ := filepath.Glob(filepath.Join(CacheDir, "root-*"))
	sort.Sort(sort.Reverse(sort.StringSlice(roots)))
	var best *Tree
	var bestTime time.Time
	for _, r := range roots {
		if strings.Contains(filepath.Base(r), ".tmp") {
			continue
		}
		tr, err := open(r)
		if err != nil {
			continue
		}
		fi, err := os.Stat(r)
		if err == nil && (best == nil || fi.ModTime().After(bestTime)) {
			best, bestTime = tr, fi.ModTime()
		}
	}
	return best
}

// fetch downloads and extracts the kernel package under the cache lock.
func fetch() (*Tree, error) {
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not in PATH", tool)
		}
	}
	if err := os.MkdirAll(CacheDir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockCache()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if tr := newestCached(); tr != nil { // someone else finished meanwhile
		return tr, nil
	}
	pkg, err := imagePackage()
	if err != nil {
		if _, uerr := run("", "apt-get", "update", "-qq"); uerr == nil {
			pkg, err = imagePackage()
		}
		if err != nil {
			return nil, err
		}
	}
	if out, err := run("", "apt-cache", "show", "--no-all-versions", pkg+"-unsigned"); err == nil && len(out) > 0 {
		pkg += "-unsigned"
	}
	out, err := run("", "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return nil, fmt.Errorf("apt-cache show %s: %v", pkg, err)
	}
	version := ""
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Version: "); ok {
			version = strings.TrimSpace(v)
			break
		}
	}
	if version == "" {
		return nil, fmt.Errorf("apt-cache show %s: no version", pkg)
	}
	deb := filepath.Join(CacheDir, "linux-image-"+version+".deb")
	if _, err := os.Stat(deb); errors.Is(err, fs.ErrNotExist) {
		tmp, err := os.MkdirTemp(CacheDir, "download-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		os.Chmod(tmp, 0o755) // apt's sandbox user must be able to write there
		if out, err := run(tmp, "apt-get", "download", "-q", pkg+"="+version); err != nil {
			return nil, fmt.Errorf("apt-get download %s=%s: %v: %s", pkg, version, err, bytes.TrimSpace(out))
		}
		debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
		if len(debs) != 1 {
			return nil, fmt.Errorf("apt-get download left %d files", len(debs))
		}
		if err := os.Rename(debs[0], deb); err != nil {
			return nil, err
		}
	}
	root := filepath.Join(CacheDir, "root-"+version)
	tmp, err := os.MkdirTemp(CacheDir, "root-"+version+".tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if out, err := run("", "dpkg-deb", "-x", deb, tmp); err != nil {
		return nil, fmt.Errorf("dpkg-deb -x %s: %v: %s", deb, err, bytes.TrimSpace(out))
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, root); err != nil {
		return nil, err
	}
	return open(root)
}

// lockCache takes the cache's flock(2), shared with the VM tests.
func lockCache() (unlock func(), err error) {
	lock, err := os.OpenFile(filepath.Join(CacheDir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		lock.Close()
		return nil, err
	}
	return func() { lock.Close() }, nil
}

// imagePackage returns the versioned image package the meta package needs.
func imagePackage() (string, error) {
	out, err := run("", "apt-cache", "depends", metaPackage)
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %v", metaPackage, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-6.12.") {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("apt-cache depends %s: no linux-image-6.12.* dependency", metaPackage)
}

func run(dir, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	return cmd.CombinedOutput()
}

// depmodFiles are what depmod writes into a module directory.
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
		t.Fatalf("copying %s: %v", tr.ModDir, err)
	}
	return base, filepath.Join(base, "lib", "modules", tr.Version)
}

func pristineCopy(tr *Tree, base string) error {
	modDir := filepath.Join(base, "lib", "modules", tr.Version)
	return filepath.WalkDir(tr.ModDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tr.ModDir, p)
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
	if d := depmodOnce.dirs[tr.ModDir]; d != "" {
		return d
	}
	var base string
	if filepath.Dir(tr.Root) == CacheDir {
		base = filepath.Join(CacheDir, "depmod-"+strings.TrimPrefix(filepath.Base(tr.Root), "root-"))
		unlock, err := lockCache()
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
			t.Fatalf("copying %s: %v", tr.ModDir, err)
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
		depmodOnce.dirs[tr.ModDir] = modDir
	}
	return modDir
}
