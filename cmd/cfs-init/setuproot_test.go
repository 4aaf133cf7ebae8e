package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
	"golang.org/x/sys/unix"
)

// These tests run `cfs-init setup-root` on this host against a temporary
// "sysroot" holding an insecure repository (this host's file systems have
// no fs-verity), as a systemd initramfs would after mounting the physical
// root. They need root for mounting.

func buildBinaries(t *testing.T) (cfsInit, cfsDeploy string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds binaries and mounts file systems")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	return gobuild.T(t, "./cmd/cfs-init"), gobuild.T(t, "./cmd/cfs-deploy")
}

func TestMain(m *testing.M) {
	code := m.Run()
	gobuild.Cleanup()
	os.Exit(code)
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// commit commits src to branch b and returns the image digest.
func commit(t *testing.T, cfsDeploy, repo, src string) string {
	t.Helper()
	out, err := exec.Command(cfsDeploy, "--repo", repo, "commit", "--branch", "b", "--json", src).Output()
	if err != nil {
		t.Fatalf("commit %s: %v", src, err)
	}
	var res struct{ Image string }
	if err := json.Unmarshal(out, &res); err != nil || len(res.Image) != 64 {
		t.Fatalf("commit output %s: %v", out, err)
	}
	return res.Image
}

// unmountAll takes every mount off dir, top first.
func unmountAll(dir string) {
	for i := 0; i < 20; i++ {
		if unix.Unmount(dir, unix.MNT_DETACH) != nil {
			return
		}
	}
}

// unitName is systemd's mount unit name for a path (systemd-escape --path
// --suffix=mount), for the paths these tests use.
func unitName(p string) string {
	r := strings.NewReplacer("/", "-", "-", `\x2d`)
	return r.Replace(strings.Trim(p, "/")) + ".mount"
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func isMountPoint(t *testing.T, p string) bool {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_BASIC_STATS, &stx); err != nil {
		t.Fatal(err)
	}
	return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
}

func TestSetupRootHost(t *testing.T) {
	cfsInit, cfsDeploy := buildBinaries(t)

	big := strings.Repeat("composefs objects live in the data-only layer.\n", 100)
	src := t.TempDir()
	write(t, filepath.Join(src, "usr/share/doc/big.txt"), big)
	write(t, filepath.Join(src, "usr/lib/os-release"), "ID=cfstest\n")
	write(t, filepath.Join(src, "etc/hostname"), "from-the-image\n")
	for _, d := range []string{"var", "sysroot", "run", "sbin"} {
		os.MkdirAll(filepath.Join(src, d), 0o755)
	}

	disk := t.TempDir() // the physical root's contents
	repo := filepath.Join(disk, "composefs")
	if out, err := exec.Command(cfsDeploy, "--repo", repo, "init", "--insecure").CombinedOutput(); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	digest := commit(t, cfsDeploy, repo, src)
	write(t, filepath.Join(src, "usr/lib/os-release"), "ID=cfstest\nVERSION=2\n")
	undeployed := commit(t, cfsDeploy, repo, src)
	write(t, filepath.Join(disk, "state/deploy", digest, "etc/hostname"), "deployed-host\n")
	write(t, filepath.Join(disk, "state/os/default/var/log/old.log"), "earlier boot\n")

	// The physical root as systemd leaves it: mounted on /sysroot.
	sysroot := t.TempDir()
	if err := unix.Mount(disk, sysroot, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountAll(sysroot) })
	run := t.TempDir()
	// systemd makes every mount shared; moving mounts is restricted then.
	if err := unix.Mount("tmpfs", run, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountAll(run) })
	for _, m := range []string{sysroot, run} {
		if err := unix.Mount("", m, "", unix.MS_SHARED, ""); err != nil {
			t.Fatal(err)
		}
	}

	setupRoot := func(cmdline string) (string, error) {
		cmd := exec.Command(cfsInit, "setup-root", "--sysroot", sysroot, "--run", run, "--cmdline", cmdline)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		return stderr.String(), err
	}
	untouched := func(what string) {
		t.Helper()
		if _, err := os.Stat(filepath.Join(sysroot, "composefs/meta.json")); err != nil {
			t.Errorf("%s: %s no longer shows the physical root: %v", what, sysroot, err)
		}
		if _, err := os.Stat(filepath.Join(run, "cfs-deploy/staging")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the staging directory is left behind: %v", what, err)
		}
		for _, d := range []string{"cfs-deploy/sysroot", "cfs-deploy/image"} {
			if p := filepath.Join(run, d); isDir(p) && isMountPoint(t, p) {
				t.Errorf("%s: %s is left mounted", what, p)
			}
		}
	}

	t.Run("refuses a verified boot without fs-verity", func(t *testing.T) {
		out, err := setupRoot("root=/dev/vda composefs=" + digest)
		if err == nil {
			t.Fatalf("setup-root succeeded:\n%s", out)
		}
		if want := "refusing to boot: image composefs/images/" + digest + " has no fs-verity digest"; !strings.Contains(out, want) {
			t.Errorf("output:\n%s\nwant it to contain %q", out, want)
		}
		untouched("refused")
	})

	t.Run("refuses a deployment without state", func(t *testing.T) {
		out, err := setupRoot("composefs=?" + undeployed)
		if err == nil || !strings.Contains(out, "state/deploy/"+undeployed+" does not exist") {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
		untouched("no state")
	})

	t.Run("assembles the root", func(t *testing.T) {
		// The first image is not in the repository: the next is used.
		missing := strings.Repeat("0", 64)
		out, err := setupRoot("ro quiet composefs=" + missing + " composefs=?" + digest + " cfs.debug")
		if err != nil {
			t.Fatalf("setup-root: %v\n%s", err, out)
		}
		t.Logf("setup-root said:\n%s", out)
		// Off comes the composefs tree with everything on it; the
		// physical root's mount stays.
		defer unix.Unmount(sysroot, unix.MNT_DETACH)

		check := func(p, want string) {
			t.Helper()
			got, err := os.ReadFile(filepath.Join(sysroot, p))
			if err != nil || string(got) != want {
				t.Errorf("%s: %q, %v; want %q", p, got, err, want)
			}
		}
		check("usr/share/doc/big.txt", big)
		check("usr/lib/os-release", "ID=cfstest\n")
		check("etc/hostname", "deployed-host\n")
		check("var/log/old.log", "earlier boot\n")
		check("sysroot/state/deploy/"+digest+"/etc/hostname", "deployed-host\n")
		if _, err := os.Stat(filepath.Join(sysroot, "sysroot/composefs/meta.json")); err != nil {
			t.Errorf("the physical root is not at /sysroot/sysroot: %v", err)
		}

		// /etc and /var are writable and backed by the state directories.
		write(t, filepath.Join(sysroot, "etc/machine-id"), "0123\n")
		write(t, filepath.Join(sysroot, "var/log/new.log"), "this boot\n")
		if b, err := os.ReadFile(filepath.Join(disk, "state/deploy", digest, "etc/machine-id")); err != nil || string(b) != "0123\n" {
			t.Errorf("/etc write did not reach the deployment's state: %q, %v", b, err)
		}
		if b, err := os.ReadFile(filepath.Join(disk, "state/os/default/var/log/new.log")); err != nil || string(b) != "this boot\n" {
			t.Errorf("/var write did not reach the OS's state: %q, %v", b, err)
		}
		// The image itself is read-only.
		if err := os.WriteFile(filepath.Join(sysroot, "usr/new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
			t.Errorf("writing into the image: %v, want EROFS", err)
		}
		// The physical root, the composefs root and its /etc, /var and
		// /sysroot; propagation between the shared mounts adds nothing.
		mi, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		var under []string
		for _, line := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 4 && (f[4] == sysroot || strings.HasPrefix(f[4], sysroot+"/")) {
				under = append(under, f[4])
			}
		}
		if len(under) != 5 {
			t.Errorf("mounts at or under %s: %v, want 5", sysroot, under)
		}
		for _, p := range []string{"", "etc", "var", "sysroot"} {
			if !isMountPoint(t, filepath.Join(sysroot, p)) {
				t.Errorf("%s is not a mount point", filepath.Join(sysroot, p))
			}
		}

		b, err := os.ReadFile(filepath.Join(run, "cfs-deploy/booted.json"))
		if err != nil {
			t.Fatal(err)
		}
		var rec map[string]any
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatal(err)
		}
		if rec["digest"] != digest || rec["insecure"] != true || rec["mode"] != "setup-root" ||
			rec["deployment"] != "/sysroot/state/deploy/"+digest || rec["stateroot"] != "default" {
			t.Errorf("booted.json:\n%s", b)
		}
		if _, err := os.Stat(filepath.Join(run, "cfs-deploy/staging")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("staging directory left behind: %v", err)
		}

		// The root's overlay names the layer and the objects where they
		// stay mounted, under run, which moves into the booted system.
		phys, layer := filepath.Join(run, "cfs-deploy/sysroot"), filepath.Join(run, "cfs-deploy/image")
		var rootOpts string
		for _, line := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(line); len(f) > 9 && f[4] == sysroot && f[len(f)-3] == "overlay" {
				rootOpts = f[len(f)-1]
			}
		}
		for _, want := range []string{"lowerdir+=" + layer, "datadir+=" + phys + "/composefs/objects"} {
			if !strings.Contains(","+rootOpts+",", ","+want+",") {
				t.Errorf("root overlay options %q lack %q", rootOpts, want)
			}
		}
		for _, p := range []string{phys, layer} {
			if !isMountPoint(t, p) {
				t.Errorf("%s is not a mount point", p)
			}
		}
		if _, err := os.Stat(filepath.Join(layer, "usr/lib/os-release")); err != nil {
			t.Errorf("the image's layer does not show its tree: %v", err)
		}
		defer unix.Unmount(layer, unix.MNT_DETACH)
		defer unix.Unmount(phys, unix.MNT_DETACH)
		// Nothing holds the visible mount of the physical root: the image
		// was opened through a clone of it, so at shutdown it unmounts
		// without "Device or resource busy" while the root stays whole.
		pb := filepath.Join(run, "cfs-deploy/sysroot-probe")
		if err := os.MkdirAll(pb, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(phys, pb, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		if err := unix.Unmount(phys, 0); err != nil {
			t.Errorf("unmount the physical root's mount %s: %v; want it free", phys, err)
		} else {
			check("usr/share/doc/big.txt", big)
			if err := unix.Mount(pb, phys, "", unix.MS_BIND, ""); err != nil {
				t.Fatal(err)
			}
		}
		unix.Unmount(pb, unix.MNT_DETACH)

		// Units for systemd: /var is unmounted at shutdown (and required by
		// local-fs.target); the physical root and the image never are.
		units := filepath.Join(run, "cfs-deploy/systemd")
		unit := func(name string) string {
			t.Helper()
			b, err := os.ReadFile(filepath.Join(units, name))
			if err != nil {
				t.Error(err)
			}
			return string(b)
		}
		if u := unit("var.mount"); !strings.Contains(u, "What="+phys+"/state/os/default/var\n") ||
			!strings.Contains(u, "Where=/var\n") || strings.Contains(u, "DefaultDependencies=no") {
			t.Errorf("var.mount:\n%s", u)
		}
		if l, err := os.Readlink(filepath.Join(units, "local-fs.target.requires/var.mount")); err != nil || l != "../var.mount" {
			t.Errorf("local-fs.target.requires/var.mount: %q, %v", l, err)
		}
		for _, u := range []string{unit(unitName(phys)), unit(unitName(layer)), unit("etc.mount"), unit("sysroot.mount")} {
			if !strings.Contains(u, "DefaultDependencies=no\n") {
				t.Errorf("a unit of a mount the root needs till the end is stopped at shutdown:\n%s", u)
			}
		}
		if u := unit(unitName(layer)); !strings.Contains(u, "Type=erofs\n") || !strings.Contains(u, "What="+phys+"/composefs/images/"+digest+"\n") {
			t.Errorf("image unit:\n%s", u)
		}
	})
	untouched("after unmounting")

	t.Run("refuses an image whose digest is wrong", func(t *testing.T) {
		// Point the deployed image's name at the other image's object.
		link := filepath.Join(repo, "images", digest)
		target, err := os.Readlink(filepath.Join(repo, "images", undeployed))
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		out, err := setupRoot("composefs=?" + digest)
		want := "refusing to boot: image composefs/images/" + digest + " has fs-verity digest " + undeployed +
			" (computed by cfs-init: insecure deployment without fs-verity), the kernel command line expects " + digest +
			"; the image was changed or the boot entry is wrong."
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("err %v, output:\n%s\nwant:\n%s", err, out, want)
		}
		untouched("wrong digest")
	})
}
