package vmtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
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

// CacheDir holds the downloaded kernel package and its extracted tree. It
// lives outside the repository so that a kernel is fetched once per machine,
// and other tools of this project (the initramfs builder's tests) share it:
//
//	CacheDir/.lock                          flock(2) while a tree is being set up
//	CacheDir/linux-image-<pkgversion>.deb   the package as apt-get downloaded it
//	CacheDir/root-<pkgversion>/             dpkg-deb -x of it, plus depmod's output
const CacheDir = "/var/cache/cfs-deploy-vm"

// kernelMetaPackage always depends on the newest 6.12 image package.
const kernelMetaPackage = "linux-image-6.12-amd64"

// RequiredEnv, set to 1, turns the skips for a missing environment (no root,
// no QEMU, no network to fetch the kernel) into failures. CI sets it so that
// the suite cannot pass by skipping.
const RequiredEnv = "CFS_DEPLOY_VM_REQUIRED"

// KernelTree is an extracted Debian kernel package.
type KernelTree struct {
	Root           string // the package's files, extracted
	Version        string // kernel release, e.g. 6.12.117+deb12-amd64
	Vmlinuz        string // Root/boot/vmlinuz-<Version>
	ModulesDir     string // Root/lib/modules/<Version>, with modules.dep
	PackageVersion string // its Debian version, e.g. 6.12.117-1~deb12u1
}

var kernelOnce struct {
	sync.Mutex
	tree *KernelTree
	skip string // why the environment cannot provide a kernel
	err  error
}

// Kernel returns Debian's 6.12 kernel, downloading and extracting it into
// CacheDir the first time. Without network access to the Debian archive, and
// no kernel in the cache, the test is skipped with the reason (or fails, with
// RequiredEnv=1).
func Kernel(t testing.TB) *KernelTree {
	t.Helper()
	Require(t)
	kernelOnce.Lock()
	defer kernelOnce.Unlock()
	if kernelOnce.tree == nil && kernelOnce.skip == "" && kernelOnce.err == nil {
		start := time.Now()
		kernelOnce.tree, kernelOnce.skip, kernelOnce.err = setupKernel(CacheDir, t.Logf)
		if kernelOnce.tree != nil {
			t.Logf("kernel %s from %s (%v)", kernelOnce.tree.Version, kernelOnce.tree.Root, time.Since(start).Round(time.Millisecond))
		}
	}
	switch {
	case kernelOnce.err != nil:
		t.Fatalf("kernel: %v", kernelOnce.err)
	case kernelOnce.skip != "":
		skipOrFail(t, "kernel: "+kernelOnce.skip)
	}
	return kernelOnce.tree
}

// setupKernel returns a tree, or the reason the environment cannot provide one
// (skip), or an error that is a bug or a broken cache.
func setupKernel(cache string, logf func(string, ...any)) (tree *KernelTree, skip string, err error) {
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb", "depmod"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Sprintf("%s not found in PATH (install packages apt, dpkg and kmod)", tool), nil
		}
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, "", err
	}
	unlock, err := lockFile(filepath.Join(cache, ".lock"))
	if err != nil {
		return nil, "", err
	}
	defer unlock()

	pkg, version, resolveErr := resolveKernelPackage()
	if resolveErr != nil {
		// Offline: any complete tree in the cache will do.
		if root := newestCachedRoot(cache); root != "" {
			logf("cannot ask apt for the current kernel (%v); using cached %s", resolveErr, root)
			tree, err := openTree(root, strings.TrimPrefix(filepath.Base(root), "root-"))
			return tree, "", err
		}
		return nil, resolveErr.Error(), nil
	}

	root := filepath.Join(cache, "root-"+version)
	if tree, err := openTree(root, version); err == nil {
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
	tree, err = openTree(root, version)
	return tree, "", err
}

// resolveKernelPackage asks apt which image package the meta package points
// at now, and its version. One apt-cache call: this machine's apt keeps no
// binary cache, so each call re-reads the package lists (seconds under load).
func resolveKernelPackage() (pkg, version string, err error) {
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
	out, err := run("", "apt-cache", "show", "--no-all-versions", kernelMetaPackage)
	if err != nil {
		return "", "", fmt.Errorf("apt-cache show %s: %v: %s", kernelMetaPackage, err, lastLines(out, 3))
	}
	if pkg, version, ok := parseMetaDepends(out); ok {
		return pkg, version, nil
	}
	return "", "", fmt.Errorf("apt-cache show %s: no dependency \"linux-image-6.12.* (= VERSION)\": %s", kernelMetaPackage, lastLines(out, 8))
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

// openTree checks root and completes it with modules.dep when missing (a
// tree extracted by someone who did not run depmod).
func openTree(root, version string) (*KernelTree, error) {
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("%s: want one boot/vmlinuz-*, found %d", root, len(images))
	}
	kver := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	mods := filepath.Join(root, "lib", "modules", kver)
	if _, err := os.Stat(mods); err != nil {
		return nil, fmt.Errorf("%s: no modules for %s: %v", root, kver, err)
	}
	if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err != nil {
		if out, err := run("", "depmod", "-b", root, kver); err != nil {
			return nil, fmt.Errorf("depmod -b %s %s: %v: %s", root, kver, err, lastLines(out, 3))
		}
	}
	return &KernelTree{Root: root, Version: kver, Vmlinuz: images[0], ModulesDir: mods, PackageVersion: version}, nil
}

// newestCachedRoot returns the most recently extracted complete root, or "".
func newestCachedRoot(cache string) string {
	roots, _ := filepath.Glob(filepath.Join(cache, "root-*"))
	type cand struct {
		dir string
		mod time.Time
	}
	var cands []cand
	for _, r := range roots {
		if strings.Contains(filepath.Base(r), ".tmp-") {
			continue
		}
		if fi, err := os.Stat(filepath.Join(r, "boot")); err == nil {
			cands = append(cands, cand{r, fi.ModTime()})
		}
	}
	if len(cands) == 0 {
		return ""
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].mod.After(cands[j].mod) })
	return cands[0].dir
}

// lockFile takes an exclusive flock on path, waiting for other processes.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("flock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// run runs a command with its combined output captured and the environment
// apt needs to stay non-interactive.
func run(dir, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	return cmd.CombinedOutput()
}

// lastLines returns the last n non-empty lines of out, joined for an error.
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
