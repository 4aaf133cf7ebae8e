package vm_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/tests/vm/vmtest"
)

// roleInit is a busybox /init that does what vmtest.role= on the command
// line says: "bad" reboots at once, as a broken update would before it is
// marked good; "good" reports and powers off. Its lines go through
// /dev/kmsg at a level the console shows with loglevel=4, so they carry the
// kernel's uptime.
const roleInit = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
case " $(/bin/busybox cat /proc/cmdline) " in
*" vmtest.role=bad "*)
	echo "<2>VMTEST-BAD: rebooting" >/dev/kmsg
	/bin/busybox reboot -f ;;
*" vmtest.role=good "*)
	echo "<2>VMTEST-GOOD: powering off" >/dev/kmsg
	/bin/busybox poweroff -f ;;
esac
echo "<2>VMTEST-NOROLE: $(/bin/busybox cat /proc/cmdline)" >/dev/kmsg
/bin/busybox poweroff -f
`

// TestUEFIBootCounting checks the UEFI harness against systemd-boot's boot
// counting, with nothing of cfs-deploy in the loop: OVMF starts
// systemd-boot from the ESP, which boots the newer entry bad+1.conf (its
// higher version wins under the same sort-key, as cfs-deploy writes
// them) and renames it to bad+0-1.conf first; bad's init reboots. The next
// boot, on the same disk and variable store, runs good.conf by itself.
func TestUEFIBootCounting(t *testing.T) {
	k := vmtest.Kernel(t)
	vmtest.RequireUEFI(t)

	r := vmtest.NewInitrd()
	if err := r.CopyFile("/bin/busybox", "/bin/busybox", 0o755); err != nil {
		t.Fatalf("static busybox (Debian package busybox-static): %v", err)
	}
	r.File("/init", 0o755, []byte(roleInit))

	esp := t.TempDir()
	write := func(p string, data []byte) {
		full := filepath.Join(esp, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kernel, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	initrd, err := os.ReadFile(r.WriteFile(t))
	if err != nil {
		t.Fatal(err)
	}
	write("vmtest/vmlinuz", kernel)
	write("vmtest/initrd.img", initrd)
	// No default: a counted entry must win by its sort order, not by a
	// default that would keep naming it once its tries are used up.
	write("loader/loader.conf", []byte("timeout 0\n"))
	entry := func(role, version string) []byte {
		return []byte("title vmtest " + role + "\nsort-key cfs-deploy\nversion " + version +
			"\nlinux /vmtest/vmlinuz\ninitrd /vmtest/initrd.img\noptions console=ttyS0 panic=-1 loglevel=4 vmtest.role=" + role + "\n")
	}
	write("loader/entries/good.conf", entry("good", "1"))
	write("loader/entries/bad+1.conf", entry("bad", "2"))

	disk := vmtest.MakeESPDisk(t, vmtest.ESPConfig{Dir: esp, SystemdBoot: true})
	vars := vmtest.NewOVMFVars(t)
	checkEntries := func(when string, want ...string) {
		t.Helper()
		got, err := disk.Entries()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: loader/entries holds %q, want %q", when, got, want)
		}
	}
	boot := func(marker string) *vmtest.VM {
		t.Helper()
		vm := vmtest.BootUEFI(t, vmtest.UEFIConfig{Vars: vars, Disks: []string{disk.Path}})
		if _, err := vm.WaitFor(marker); err != nil {
			t.Fatal(err)
		}
		code, err := vm.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 {
			t.Fatalf("QEMU exit status %d", code)
		}
		ks, ok := vm.KernelStart()
		if !ok {
			t.Fatal("no console line carries the kernel's uptime")
		}
		t.Logf("%s: kernel started %v after QEMU (firmware and systemd-boot), QEMU gone after %v",
			marker, ks.Round(10*time.Millisecond), time.Since(vm.Started()).Round(10*time.Millisecond))
		return vm
	}

	checkEntries("before booting", "bad+1.conf", "good.conf")
	vm := boot("VMTEST-BAD")
	if !vm.Rebooted() || strings.Contains(vm.Output(), "VMTEST-GOOD") {
		t.Fatalf("boot 1: rebooted %v; want bad's reboot and nothing of good", vm.Rebooted())
	}
	checkEntries("after boot 1", "bad+0-1.conf", "good.conf")

	vm = boot("VMTEST-GOOD")
	if !vm.PoweredOff() || strings.Contains(vm.Output(), "VMTEST-BAD") {
		t.Fatalf("boot 2: powered off %v; want good's power-off and nothing of bad", vm.PoweredOff())
	}
	// The exhausted entry was not booted again, so not renamed again.
	checkEntries("after boot 2", "bad+0-1.conf", "good.conf")
}
