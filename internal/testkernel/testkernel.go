// Package testkernel gives tests a real distribution kernel: Debian's 6.12
// kernel package, downloaded with apt and extracted into a machine-wide
// cache, so that it is fetched once per machine however many test packages
// (the kmod and initramfs tests through kmodtest, the VM tests through
// vmtest) use it. The cache's layout is relied on by scripts and CI:
//
//	CacheDir/.lock                          flock(2) while a tree is being set up
//	CacheDir/linux-image-<pkgversion>.deb   the package as apt-get downloaded it
//	CacheDir/root-<pkgversion>/             dpkg-deb -x of it
//
// What a caller adds to a tree (the VM tests run depmod in it) it adds
// under Lock. The package is for tests only: nothing it does is needed by
// the programs.
package testkernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"github.com/cfs-deploy/cfs-deploy/internal/filelock"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// CacheDir lives outside the repository so that a kernel is fetched once
// per machine.
const CacheDir = "/var/cache/cfs-deploy-vm"

// metaPackage always depends on the newest 6.12 image package.
const metaPackage = "linux-image-6.12-amd64"

// Tree is an extracted kernel package.
type Tree struct {
	Root           string // the package's files, extracted
	Version        string // kernel release, e.g. 6.12.117+deb12-amd64
	Vmlinuz        string // Root/boot/vmlinuz-<Version>
	ModulesDir     string // Root/usr/lib/modules/<Version> or Root/lib/modules/<Version>
	PackageVersion string // its Debian version, e.g. 6.12.117-1~deb12u1; "" if unknown
}

// Open checks an extracted package: one boot/vmlinuz-* and the module
// directory of that kernel, recognised by the modules.builtin every
// kernel package ships.
func Open(root, packageVersion string) (*Tree, error) {
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("%s: want one boot/vmlinuz-*, found %d", root, len(images))
	}
	kver := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	for _, d := range []string{"usr/lib/modules", "lib/modules"} {
		mods := filepath.Join(root, d, kver)
		if _, err := os.Stat(filepath.Join(mods, "modules.builtin")); err == nil {
			return &Tree{Root: root, Version: kver, Vmlinuz: images[0], ModulesDir: mods, PackageVersion: packageVersion}, nil
		}
	}
	return nil, fmt.Errorf("%s: no modules for %s", root, kver)
}

// Newest returns the most recently extracted complete tree in cache, or
// nil, without asking apt.
func Newest(cache string) *Tree {
	roots, _ := filepath.Glob(filepath.Join(cache, "root-*"))
	// Highest version first, so that it wins a tie of modification times.
	sort.Sort(sort.Reverse(sort.StringSlice(roots)))
	var best *Tree
	var bestTime time.Time
	for _, r := range roots {
		name := filepath.Base(r)
		if strings.Contains(name, ".tmp-") {
			continue // an extraction in progress, or a crashed one
		}
		tree, err := Open(r, strings.TrimPrefix(name, "root-"))
		if err != nil {
			continue
		}
		if fi, err := os.Stat(r); err == nil && (best == nil || fi.ModTime().After(bestTime)) {
			best, bestTime = tree, fi.ModTime()
		}
	}
	return best
}

// Fetch returns the tree of the package that apt says is current,
// downloading and extracting it into cache when it is not there yet.
// Without the Debian archive it falls back to the newest tree in cache.
// When neither works it returns the reason the environment cannot provide
// a kernel (skip), or an error that is a bug or a broken cache.
func Fetch(cache string, logf func(string, ...any)) (tree *Tree, skip string, err error) {
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Sprintf("%s not found in PATH (install packages apt and dpkg)", tool), nil
		}
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, "", err
	}
	unlock, err := Lock(cache)
	if err != nil {
		return nil, "", err
	}
	defer unlock()

	pkg, version, resolveErr := resolvePackage()
	if resolveErr != nil {
		if tree := Newest(cache); tree != nil {
			logf("cannot ask apt for the current kernel (%v); using cached %s", resolveErr, tree.Root)
			return tree, "", nil
		}
		return nil, resolveErr.Error(), nil
	}

	root := filepath.Join(cache, "root-"+version)
	if tree, err := Open(root, version); err == nil {
		return tree, "", nil
	}
	deb := filepath.Join(cache, "linux-image-"+version+".deb")
	if _, err := os.Stat(deb); err != nil {
		logf("downloading %s(-unsigned)=%s into %s", pkg, version, cache)
		if err := download(pkg, version, deb); err != nil {
			return nil, err.Error(), nil
		}
	}
	if err := extract(deb, root); err != nil {
		return nil, "", err
	}
	tree, err = Open(root, version)
	return tree, "", err
}

// Lock takes the cache's flock(2), waiting for other processes: every
// change to the cache is made under it.
func Lock(cache string) (unlock func(), err error) {
	return filelock.Exclusive(filepath.Join(cache, ".lock"))
}

// resolvePackage asks apt which image package the meta package points at
// now, and its version. One apt-cache call: this machine's apt keeps no
// binary cache, so each call re-reads the package lists (seconds under
// load).
func resolvePackage() (pkg, version string, err error) {
	pkg, version, err = metaDependency()
	if err != nil {
		// apt may simply not have package lists yet.
		if out, uerr := run("", "apt-get", "update", "-qq"); uerr != nil {
			return "", "", fmt.Errorf("%v; then apt-get update failed: %v: %s", err, uerr, lastLines(out, 5))
		}
		if pkg, version, err = metaDependency(); err != nil {
			return "", "", fmt.Errorf("%v (even after apt-get update)", err)
		}
	}
	return pkg, version, nil
}

// metaDependency parses "Depends: linux-image-6.12.117+deb12-amd64 (= 6.12.117-1~deb12u1)".
func metaDependency() (pkg, version string, err error) {
	out, err := run("", "apt-cache", "show", "--no-all-versions", metaPackage)
	if err != nil {
		return "", "", fmt.Errorf("apt-cache show %s: %v: %s", metaPackage, err, lastLines(out, 3))
	}
	if pkg, version, ok := parseMetaDepends(out); ok {
		return pkg, version, nil
	}
	return "", "", fmt.Errorf("apt-cache show %s: no dependency \"linux-image-6.12.* (= VERSION)\": %s", metaPackage, lastLines(out, 8))
}

func parseMetaDepends(show []byte) (pkg, version string, ok bool) {
	sc := bufio.NewScanner(bytes.NewReader(show))
	for sc.Scan() {
		deps, ok := strings.CutPrefix(sc.Text(), "Depends: ")
		if !ok {
			continue
		}
		for _, d := range strings.Split(deps, ",") {
			f := strings.Fields(d)
			if len(f) == 3 && strings.HasPrefix(f[0], "linux-image-6.12.") && f[1] == "(=" && strings.HasSuffix(f[2], ")") {
				return f[0], strings.TrimSuffix(f[2], ")"), true
			}
		}
	}
	return "", "", false
}

// download fetches the image package, preferring the -unsigned twin of pkg
// (same kernel and modules, no Secure Boot signature), with apt-get
// download, which checks the archive's signed hashes, and moves it to dst.
func download(pkg, version, dst string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(dst), "download-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, 0o755) // apt's sandbox user must be able to write there
	var failures []string
	for _, p := range []string{pkg + "-unsigned", pkg} {
		if strings.HasSuffix(pkg, "-unsigned") && p != pkg {
			continue
		}
		out, err := run(tmp, "apt-get", "download", "-q", p+"="+version)
		if err != nil {
			failures = append(failures, fmt.Sprintf("apt-get download %s=%s (in %s): %v: %s", p, version, tmp, err, lastLines(out, 3)))
			continue
		}
		debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
		if len(debs) != 1 {
			return fmt.Errorf("apt-get download %s=%s left %d .deb files in %s", p, version, len(debs), tmp)
		}
		return os.Rename(debs[0], dst)
	}
	return errors.New(strings.Join(failures, "; "))
}

// extract unpacks deb into root. A fresh root is built beside it and renamed
// into place, so a crash never leaves a half-extracted root behind.
func extract(deb, root string) error {
	dir := root
	if _, err := os.Stat(root); errors.Is(err, os.ErrNotExist) {
		tmp, err := os.MkdirTemp(filepath.Dir(root), filepath.Base(root)+".tmp-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	if out, err := run("", "dpkg-deb", "-x", deb, dir); err != nil {
		return fmt.Errorf("dpkg-deb -x %s %s: %v: %s (delete the .deb to download it again)", deb, dir, err, lastLines(out, 3))
	}
	if dir != root {
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
		return os.Rename(dir, root)
	}
	return nil
}

// run runs a command with its combined output captured and the environment
// apt needs to stay non-interactive.
func run(dir, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	return cmd.CombinedOutput()
}

// lastLines returns the last n lines of out, joined for an error message.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	s := strings.Join(lines, " | ")
	if s == "" {
		return "(no output)"
	}
	return s
}
