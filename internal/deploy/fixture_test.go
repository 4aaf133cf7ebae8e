package deploy

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/initramfs"
	"github.com/cfs-deploy/cfs-deploy/internal/kmod"
	"github.com/cfs-deploy/cfs-deploy/internal/kmod/kmodtest"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"golang.org/x/sys/unix"
)

// fixture is a sysroot with an insecure repository, a boot directory and
// a source tree shaped like a small OS: /etc with the kinds of entries a
// checkout must reproduce, /var, os-release, and a kernel with the real
// modules an initramfs needs (from the Debian kernel the VM tests cache).
type fixture struct {
	t       testing.TB
	src     string // the tree to commit
	sysroot string
	boot    string
	r       *repo.Repo
	init    string // stands in for cfs-init
	kver    string
}

func newFixture(t testing.TB) *fixture { t.Helper(); return newFixtureIn(t, "") }

// newFixtureIn makes the fixture with its sysroot at the given directory
// (empty: a new temporary one).
func newFixtureIn(t testing.TB, sysroot string) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, mknod)")
	}
	kt := kmodtest.Kernel(t)
	base := t.TempDir()
	f := &fixture{
		t: t, src: filepath.Join(base, "src"), sysroot: filepath.Join(base, "sysroot"),
		init: filepath.Join(base, "cfs-init"), kver: kt.Version,
	}
	if sysroot != "" {
		f.sysroot = sysroot
	}
	f.boot = filepath.Join(f.sysroot, "boot")
	// Any regular file will do as /init: the initramfs only packs it.
	f.write("../cfs-init", "#!/bin/sh\necho not really cfs-init\n", 0o755)

	f.write("etc/hostname", "first\n", 0o644)
	f.must(unix.Setxattr(f.path("etc/hostname"), "user.origin", []byte("image"), 0))
	f.write("etc/ssh/key", "private key\n", 0o600)
	f.must(os.Lchown(f.path("etc/ssh/key"), 1000, 1000))
	f.must(os.Symlink("../usr/lib/os-release", f.path("etc/os-release")))
	f.write("etc/big.conf", strings.Repeat("a long configuration line\n", 40), 0o640)
	f.must(os.Link(f.path("etc/big.conf"), f.path("etc/big-link.conf")))
	f.must(syscall.Mkfifo(f.path("etc/initctl"), 0o600))
	f.must(unix.Mknod(f.path("etc/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	f.write("var/lib/x/file", "var seed\n", 0o644)
	f.write("usr/lib/os-release", "NAME=Fixture\nPRETTY_NAME=\"Fixture OS \\\"test\\\"\"\n", 0o644)

	mods := filepath.Join(f.src, "usr/lib/modules", f.kver)
	copyFile(t, kt.Vmlinuz, filepath.Join(mods, "vmlinuz"))
	// Only the modules the default initramfs set needs, so the commit
	// stays small; depmod's files are left out as in Debian's package.
	res, err := kmod.ResolveFS(os.DirFS(kt.ModulesDir), ".", initramfs.DefaultModules(), kmod.ResolveOptions{Optional: initramfs.DefaultModules()})
	f.must(err)
	for _, m := range res.Modules {
		copyFile(t, filepath.Join(kt.ModulesDir, m.Path), filepath.Join(mods, m.Path))
	}
	for _, name := range []string{"modules.builtin", "modules.builtin.modinfo"} {
		if _, err := os.Stat(filepath.Join(kt.ModulesDir, name)); err == nil {
			copyFile(t, filepath.Join(kt.ModulesDir, name), filepath.Join(mods, name))
		}
	}

	repoDir := filepath.Join(f.sysroot, "composefs")
	f.must(repo.Init(repoDir, repo.InitOptions{Insecure: true}))
	f.r, err = repo.Open(repoDir, repo.OpenOptions{})
	f.must(err)
	t.Cleanup(func() { f.r.Close() })
	return f
}

func (f *fixture) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) path(p string) string { return filepath.Join(f.src, p) }

func (f *fixture) write(p, content string, mode os.FileMode) {
	f.t.Helper()
	full := f.path(p)
	f.must(os.MkdirAll(filepath.Dir(full), 0o755))
	f.must(os.WriteFile(full, []byte(content), mode))
	f.must(os.Chmod(full, mode))
}

func (f *fixture) commit(branch, version string) *repo.CommitResult {
	f.t.Helper()
	res, err := f.r.CommitDir(f.src, repo.CommitOptions{Branch: branch, Version: version})
	f.must(err)
	return res
}

func (f *fixture) rollout(ref string, kargs ...string) (*Result, error) {
	return Rollout(Options{
		Repo: f.r, Sysroot: f.sysroot, BootDir: f.boot, Ref: ref, Root: "UUID=0f3c55aa-1b2c-4d5e-8f90-a1b2c3d4e5f6",
		Kargs: kargs, Init: f.init, AllowInsecure: true,
	})
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
