package vm_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/initramfs"
	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
	"github.com/cfs-deploy/cfs-deploy/tests/vm/vmtest"
)

// cfsInitModules are what an ext4 root on virtio needs, plus composefs's
// file systems: crc32c first (ext4's and jbd2's soft dependency) and the
// accelerated sha256 before anything hashes.
var cfsInitModules = []string{"crc32c_generic", "sha256-ssse3", "virtio_blk", "ext4", "erofs", "overlay", "loop"}

// TestCfsInitBootsInsecure boots the real chain on a disk without
// fs-verity: cfs-init as the initramfs's /init (built by the product's
// initramfs builder) loads the modules, mounts the ext4 root, checks the
// image by its userspace digest (composefs=?), mounts it with the
// deployment's /etc and /var, and switches root into the image's init.
// An image that is not in the repository makes it refuse and reboot.
func TestCfsInitBootsInsecure(t *testing.T) {
	k := vmtest.Kernel(t)
	img, digest := insecureDisk(t)

	initrd := filepath.Join(t.TempDir(), "initrd.img")
	f, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	m, err := initramfs.Build(f, initramfs.Options{
		Init:          gobuild.T(t, "./cmd/cfs-init"),
		ModulesTree:   k.Root,
		KernelVersion: k.Version,
		Modules:       cfsInitModules,
		Compression:   "none",
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("initramfs: %d bytes, modules %v", m.Size, m.LoadList)

	boot := func(t *testing.T, append string) *vmtest.VM {
		return vmtest.Boot(t, vmtest.Config{
			Kernel: k.Vmlinuz,
			Initrd: initrd,
			Disks:  []string{img},
			Append: "loglevel=4 root=/dev/vda rw cfs.reboot-delay=0 " + append,
		})
	}

	t.Run("boots", func(t *testing.T) {
		// Quiet, as a real boot: with cfs.debug every step line costs
		// the emulated serial port's time.
		vm := boot(t, "composefs=?"+digest)
		summary, err := vm.WaitFor("cfs-init: booting composefs image " + digest)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"booted: pid 1,",
			`booted: /etc/hostname: "cfs-vm\n"`,
			"booted: wrote /etc/booted-stamp and /var/booted-stamp",
			`booted: booted.json: { "mode": "pid1", "digest": "` + digest + `",`,
			"BOOTED-OK",
		} {
			if _, err := vm.WaitFor(want); err != nil {
				t.Fatal(err)
			}
		}
		if code, err := vm.Wait(); err != nil || code != 0 || !vm.PoweredOff() {
			t.Fatalf("QEMU exit status %d (%v), powered off %v; want 0 and a power-off", code, err, vm.PoweredOff())
		}
		var mounts []string
		for _, l := range strings.Split(vm.Output(), "\n") {
			if _, m, ok := strings.Cut(l, "booted: mount "); ok {
				mounts = append(mounts, strings.TrimSpace(m))
			}
			if strings.Contains(l, "cfs-init:") || strings.Contains(l, "booted: booted.json") {
				t.Log(strings.TrimSpace(l))
			}
		}
		for _, want := range []string{"composefs / overlay ro,", "/dev/vda /sysroot ext4 rw,", "/dev/vda /etc ext4 rw,", "/dev/vda /var ext4 rw,", "/run tmpfs", "/proc proc", "/dev devtmpfs"} {
			found := false
			for _, m := range mounts {
				found = found || strings.Contains(m, want)
			}
			if !found {
				t.Errorf("no mount %q in the booted system's /proc/mounts:\n%s", want, strings.Join(mounts, "\n"))
			}
		}
		_, s, _ := strings.Cut(summary, "cfs-init: ")
		t.Logf("summary: %s", s)

		// The writes of the booted system landed in the state directories.
		for _, p := range []string{"/state/deploy/" + digest + "/etc/booted-stamp", "/state/os/default/var/booted-stamp"} {
			if b, err := vmtest.ReadFileFromExt4(img, p); err != nil || !strings.HasPrefix(string(b), "boot at ") {
				t.Errorf("%s after the boot: %q, %v", p, b, err)
			}
		}
	})

	t.Run("refuses an image not in the repository", func(t *testing.T) {
		vm := boot(t, "cfs.debug composefs=?"+strings.Repeat("0", 64))
		line, err := vm.WaitFor("cfs-init: refusing to boot: none of the images the kernel command line names is in the repository")
		if err != nil {
			t.Fatal(err)
		}
		t.Log(line)
		if code, err := vm.Wait(); err != nil || code != 0 || !vm.Rebooted() {
			t.Fatalf("QEMU exit status %d (%v), rebooted %v; want a reboot", code, err, vm.Rebooted())
		}
		if strings.Contains(vm.Output(), "BOOTED-OK") {
			t.Fatal("booted anyway")
		}
	})
}

// insecureDisk returns an ext4 disk image holding what rollout would leave
// for a small OS (a static init that reports the boot, /etc/hostname) in
// an insecure repository: the repository and the deployment's state. digest
// is the image's.
func insecureDisk(t testing.TB) (img, digest string) {
	cfsDeploy := gobuild.T(t, "./cmd/cfs-deploy")

	// The OS image: a static init and the directories a root needs.
	tree := t.TempDir()
	for _, d := range []string{"etc", "var", "run", "sysroot", "dev", "proc", "sys", "tmp", "sbin"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, gobuild.T(t, "./tests/vm/testdata/bootedinit"), filepath.Join(tree, "sbin/init"), 0o755)
	writeFile(t, filepath.Join(tree, "etc/hostname"), "from-the-image\n")

	// The physical root: an insecure repository and the deployment's
	// state, as rollout would leave them.
	disk := t.TempDir()
	repo := filepath.Join(disk, "composefs")
	if out, err := exec.Command(cfsDeploy, "--repo", repo, "init", "--insecure").CombinedOutput(); err != nil {
		t.Fatalf("cfs-deploy init: %v\n%s", err, out)
	}
	out, err := exec.Command(cfsDeploy, "--repo", repo, "commit", "--branch", "os", "--json", tree).Output()
	if err != nil {
		t.Fatalf("cfs-deploy commit: %v", err)
	}
	var commit struct{ Image string }
	if err := json.Unmarshal(out, &commit); err != nil || len(commit.Image) != 64 {
		t.Fatalf("commit output %s: %v", out, err)
	}
	digest = commit.Image
	writeFile(t, filepath.Join(disk, "state/deploy", digest, "etc/hostname"), "cfs-vm\n")
	writeFile(t, filepath.Join(disk, "state/deploy", digest, "origin.json"), `{"stateroot": "default"}`+"\n")
	if err := os.MkdirAll(filepath.Join(disk, "state/os/default/var"), 0o755); err != nil {
		t.Fatal(err)
	}
	return vmtest.MakeExt4FromDir(t, "64M", disk, false), digest
}

func writeFile(t testing.TB, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t testing.TB, src, dst string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, perm); err != nil {
		t.Fatal(err)
	}
}
