package vm_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/tests/vm/vmtest"
)

// testUEFIFallback boots through OVMF and systemd-boot from an ESP that
// cfs-deploy writes from inside the running system (a FAT file system):
// v1 rolls out a broken v2 with --tries 2; systemd-boot tries v2 twice,
// counting down on the ESP, then boots v1 by itself; status on v1 says v2
// is bad; a good v3 with tries boots and marks itself good, and its entry
// loses the counter. Nothing but the boot loader chooses what boots.
func (f *fixture) testUEFIFallback(t *testing.T) {
	vmtest.RequireUEFI(t)
	in := f.installed(t, "verity")
	root := f.diskCopy(t, in)

	// The ESP holds what the installer put in /boot; the entry gets the
	// serial console, a reboot on panic, and the test init's knobs (the
	// test OS runs uefi.sh from the steps disk, which the host rewrites
	// before each boot). Deployments rolled out later inherit them.
	esp := vmtest.MakeESPDisk(t, vmtest.ESPConfig{SystemdBoot: true})
	must(t, esp.CopyTreeFromExt4(root, "/boot", "/"))
	must(t, esp.WriteFile("/loader/loader.conf", []byte("timeout 0\n")))
	must(t, esp.AppendEntryOptions(in.entry.File, "console=ttyS0", "panic=-1", "loglevel=4", "cfs.reboot-delay=0",
		"cfstest.run=uefi.sh", "cfstest.rundev=/dev/vdc"))
	steps, stepsDir := f.uefiStepsDisk(t)
	vars := vmtest.NewOVMFVars(t)
	v2Entry := func() string {
		t.Helper()
		for _, e := range f.espEntries(t, esp) {
			if e != in.entry.File && !strings.HasPrefix(e, strings.TrimSuffix(in.entry.File, ".conf")) {
				return e
			}
		}
		return ""
	}
	boot := func(script, marker string) string {
		t.Helper()
		f.setStep(t, steps, stepsDir, script)
		vm := vmtest.BootUEFI(t, vmtest.UEFIConfig{Vars: vars, Disks: []string{esp.Path, root, steps}, Timeout: bootTimeout})
		if _, err := vm.WaitFor(marker); err != nil {
			t.Fatal(err)
		}
		if _, err := vm.Wait(); err != nil {
			t.Fatal(err)
		}
		if ks, ok := vm.KernelStart(); ok {
			t.Logf("%s: firmware and systemd-boot took %v; QEMU ran %v", script, ks.Round(10*time.Millisecond), time.Since(vm.Started()).Round(100*time.Millisecond))
		}
		return vm.Output()
	}

	// Boot 1: v1; it rolls out the broken v2, counted, onto the ESP.
	out := boot("u1.sh", "CFSTEST-DONE")
	checkImageBooted(t, out, in.image)
	if got := consoleLine(out, "cfstest: run exit="); got != "cfstest: run exit=0" {
		t.Fatalf("boot 1: %s\n%s", got, runLines(out))
	}
	st := statusOf(t, out, "status")
	if len(st) != 2 || st[0].TriesLeft == nil || *st[0].TriesLeft != 2 {
		t.Fatalf("status after rolling out v2 --tries 2: %+v", st)
	}
	v2 := st[0].Image
	if e := v2Entry(); e != "cfs-deploy-"+v2[:12]+"+2.conf" {
		t.Fatalf("v2's entry on the ESP: %q", e)
	}

	// Boots 2 and 3: systemd-boot tries v2, renaming its entry first;
	// its init fails, the kernel panics and reboots.
	for i, want := range []string{"+1-1.conf", "+0-2.conf"} {
		out = boot("none.sh", "Kernel panic")
		checkImageBooted(t, out, v2)
		if !strings.Contains(out, "CFSTEST-BROKEN") {
			t.Fatalf("try %d of v2: its init did not run", i+1)
		}
		if e := v2Entry(); e != "cfs-deploy-"+v2[:12]+want {
			t.Fatalf("after try %d of v2 the ESP holds %q, want ...%s", i+1, e, want)
		}
	}

	// Boot 4: systemd-boot falls back to v1 by itself. v2 is bad; a good
	// v3 is rolled out with tries.
	out = boot("u4.sh", "CFSTEST-DONE")
	checkImageBooted(t, out, in.image)
	if got := consoleLine(out, "cfstest: run exit="); got != "cfstest: run exit=0" {
		t.Fatalf("boot 4: %s\n%s", got, runLines(out))
	}
	st = statusOf(t, out, "bad")
	if len(st) != 2 || !st[0].Booted || st[0].Image != in.image || st[1].Image != v2 || !st[1].Bad {
		t.Errorf("status on v1 after the fallback: %+v", st)
	}
	st = statusOf(t, out, "v3")
	if len(st) < 1 || st[0].Image == v2 || st[0].Image == in.image {
		t.Fatalf("status after rolling out v3: %+v", st)
	}
	v3 := st[0].Image

	// Boot 5: v3 boots and marks itself good: its entry loses the counter.
	out = boot("u5.sh", "CFSTEST-DONE")
	checkImageBooted(t, out, v3)
	if !strings.Contains(runLines(out), "marked good: cfs-deploy-"+v3[:12]+".conf") {
		t.Errorf("no mark-good line:\n%s", runLines(out))
	}
	if ents := f.espEntries(t, esp); !slices.Contains(ents, "cfs-deploy-"+v3[:12]+".conf") {
		t.Errorf("ESP entries after mark-good: %v", ents)
	}
}

func (f *fixture) espEntries(t *testing.T, esp *vmtest.ESPDisk) []string {
	t.Helper()
	ents, err := esp.Entries()
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

// uefiStepsDisk writes the scripts of the UEFI scenario and the tree of
// the broken v2 (its init fails at once) and the good v3.
func (f *fixture) uefiStepsDisk(t *testing.T) (disk, dir string) {
	dir = t.TempDir()
	for _, v := range []string{"v2", "v3"} {
		if out, err := exec.Command("cp", "-a", f.tree, filepath.Join(dir, v)).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v: %s", err, out)
		}
	}
	write := func(p, content string, mode os.FileMode) {
		t.Helper()
		must(t, os.WriteFile(filepath.Join(dir, p), []byte(content), mode))
	}
	write("v2/sbin/init", "#!/bin/sh\necho CFSTEST-BROKEN: this update fails before it is marked good\nexit 1\n", 0o755)
	write("v3/usr/share/test/version", "3\n", 0o644)
	status := func(tag string) string {
		return "echo @@" + tag + "-begin; cfs-deploy status --json; echo @@" + tag + "-end\n"
	}
	mountESP := "mount -t vfat /dev/vda1 /sysroot/boot\n"
	write("u1.sh", "set -e\n"+mountESP+
		"cfs-deploy commit --branch os --version 2 /mnt/v2\n"+
		"cfs-deploy rollout --tries 2 os\n"+status("status")+"umount /sysroot/boot\n", 0o644)
	write("none.sh", "exit 0\n", 0o644)
	write("u4.sh", "set -e\n"+mountESP+status("bad")+
		"cfs-deploy commit --branch os --version 3 /mnt/v3\n"+
		"cfs-deploy rollout --tries 2 "+strings.Join(espModules, " ")+" os\n"+status("v3")+"umount /sysroot/boot\n", 0o644)
	write("u5.sh", "set -e\n"+mountESP+"cfs-deploy mark-good\n"+status("status")+"umount /sysroot/boot\n", 0o644)
	write("uefi.sh", "exit 0\n", 0o644)
	return vmtest.MakeExt4FromDir(t, "160M", dir, false), dir
}

// setStep makes uefi.sh on the steps disk run the given script.
func (f *fixture) setStep(t *testing.T, disk, dir, script string) {
	t.Helper()
	p := filepath.Join(dir, "uefi.sh")
	must(t, os.WriteFile(p, []byte("exec sh /mnt/"+script+"\n"), 0o644))
	must(t, vmtest.ReplaceFileInExt4(disk, "/uefi.sh", p))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
