package vm_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
	"github.com/cfs-deploy/cfs-deploy/tests/vm/vmtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	gobuild.Cleanup()
	os.Exit(code)
}

const smokeInit = "./tests/vm/testdata/smokeinit"

// smokeInitrd returns an initramfs whose /init is smokeinit.
func smokeInitrd(t *testing.T) *vmtest.Initrd {
	r := vmtest.NewInitrd()
	if err := r.CopyFile("/init", gobuild.T(t, smokeInit), 0o755); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestBootSmoke boots the kernel into a Go /init and back out: the harness's
// kernel, initramfs writer, console capture and power-off detection work.
func TestBootSmoke(t *testing.T) {
	k := vmtest.Kernel(t)
	vm := vmtest.Boot(t, vmtest.Config{
		Kernel: k.Vmlinuz,
		Initrd: smokeInitrd(t).WriteFile(t),
		Append: "loglevel=4",
	})
	uptime, err := vm.WaitFor("smoke: uptime")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vm.WaitFor("SMOKE-OK"); err != nil {
		t.Fatal(err)
	}
	toInit := time.Since(vm.Started())
	code, err := vm.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || !vm.PoweredOff() {
		t.Fatalf("QEMU exit status %d, powered off %v; want 0 and a power-off", code, vm.PoweredOff())
	}
	// Firmware and the kernel's decompressor leave escape sequences
	// without a newline before /init's first line.
	_, uptime, _ = strings.Cut(uptime, "smoke: uptime ")
	t.Logf("boot: guest uptime at /init %s; host: SMOKE-OK after %v, QEMU gone after %v",
		uptime, toInit.Round(time.Millisecond), time.Since(vm.Started()).Round(time.Millisecond))
}

// TestBootExt4Verity loads modules from the initramfs, mounts an ext4 disk
// with the verity feature, reads files and enables fs-verity in the guest,
// checks the kernel's digest against the project's own, then corrupts the
// file offline and checks that the next boot cannot read it.
func TestBootExt4Verity(t *testing.T) {
	k := vmtest.Kernel(t)
	hello := "hello from the smoke disk\n"
	big := bytes.Repeat([]byte("composefs objects are named by their fs-verity digest.\n"), 200) // 3 blocks
	img := vmtest.MakeExt4(t, "32M", map[string]string{"hello.txt": hello, "sub/big.bin": string(big)}, true)

	r := smokeInitrd(t)
	// crc32c_generic is ext4's and jbd2's soft dependency; modules.dep
	// does not know it.
	mods, err := r.Modules(k, "virtio_blk", "crc32c_generic", "ext4")
	if err != nil {
		t.Fatal(err)
	}
	r.File("/etc/smoke-modules", 0o644, []byte(strings.Join(mods, "\n")+"\n"))
	initrd := r.WriteFile(t)
	t.Logf("modules in load order: %v", mods)

	boot := func(t *testing.T, append string) *vmtest.VM {
		return vmtest.Boot(t, vmtest.Config{
			Kernel: k.Vmlinuz,
			Initrd: initrd,
			Disks:  []string{img},
			Append: "loglevel=4 smoke.modules=/etc/smoke-modules smoke.disk=/dev/vda " + append,
		})
	}

	t.Run("read", func(t *testing.T) {
		vm := boot(t, "smoke.cat=hello.txt,sub/big.bin smoke.verity=sub/big.bin")
		for _, want := range []string{
			fmt.Sprintf("smoke: cat hello.txt: %q", hello),
			fmt.Sprintf("smoke: cat sub/big.bin: %d bytes sha256:%x", len(big), sha256.Sum256(big)),
			fmt.Sprintf("smoke: verity sub/big.bin: sha256:%s", verity.DigestBytes(big)),
			"SMOKE-OK",
		} {
			if _, err := vm.WaitFor(want); err != nil {
				t.Fatal(err)
			}
		}
		elapsed := time.Since(vm.Started())
		if code, err := vm.Wait(); err != nil || code != 0 || !vm.PoweredOff() {
			t.Fatalf("QEMU exit status %d (%v), powered off %v; want 0 and a power-off", code, err, vm.PoweredOff())
		}
		t.Logf("modules, mount, reads and verity done %v after QEMU start", elapsed.Round(time.Millisecond))
	})
	if t.Failed() {
		return
	}

	// The guest shut down cleanly, so the image holds its writes.
	if got, err := vmtest.ReadFileFromExt4(img, "/hello.txt"); err != nil || string(got) != hello {
		t.Fatalf("hello.txt read offline: %q, %v", got, err)
	}
	if stat, err := vmtest.Debugfs(img, "stat /sub/big.bin"); err != nil || !strings.Contains(stat, "Flags: 0x180000") {
		t.Fatalf("sub/big.bin should have EXTENTS|VERITY flags after the guest enabled verity: %v\n%s", err, stat)
	}
	blocks, err := vmtest.DataBlocks(img, "/sub/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 3 {
		t.Fatalf("sub/big.bin has data blocks %v, want 3", blocks)
	}
	if err := vmtest.FlipByte(img, blocks[1]*vmtest.ExtBlockSize+7); err != nil {
		t.Fatal(err)
	}

	t.Run("tampered", func(t *testing.T) {
		vm := boot(t, "smoke.cat=sub/big.bin")
		if line, err := vm.WaitFor("SMOKE-"); err != nil {
			t.Fatal(err)
		} else if !strings.Contains(line, "SMOKE-FAIL") || !strings.Contains(line, "input/output error") {
			t.Fatalf("reading a corrupted verity file: got %q, want SMOKE-FAIL with EIO", line)
		}
		if code, err := vm.Wait(); err != nil || code != 0 || !vm.Rebooted() {
			t.Fatalf("QEMU exit status %d (%v), rebooted %v; want 0 after a guest reboot", code, err, vm.Rebooted())
		}
		if !strings.Contains(vm.Output(), "FILE CORRUPTED") {
			t.Error("kernel did not log fs-verity's FILE CORRUPTED")
		}
	})
}
