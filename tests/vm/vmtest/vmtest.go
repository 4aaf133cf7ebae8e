// Package vmtest boots Linux under QEMU for cfs-deploy's end-to-end tests.
//
// A test builds its /init with gobuild.T (tests/gobuild), packs it into an initramfs with
// Initrd, prepares disks with MakeExt4, boots Debian's 6.12 kernel (Kernel)
// with Boot and then reads the serial console: VM.WaitFor a marker the guest
// prints, VM.Wait for QEMU to exit. The guest powers off to end a test
// (QEMU exits 0 and the console shows PowerDown) or reboots on failure, which
// -no-reboot turns into an exit as well (Reboot).
//
// For boots through firmware and a boot loader, MakeESPDisk builds a GPT
// disk with an EFI System Partition holding systemd-boot and the entries,
// kernels and initramfs images of a host tree (or, with CopyTreeFromExt4,
// of a /boot that cfs-deploy wrote on a root disk); BootUEFI boots it with
// OVMF, the root disk attached second. ESPDisk reads the partition back
// after a boot (Entries shows systemd-boot's counter renames) and edits it
// between boots. VM.KernelStart times firmware and loader.
//
// Everything here needs root (mounting, /var/cache), qemu-system-x86_64 and
// e2fsprogs; Require skips a test when they are missing.
package vmtest

import (
	"os"
	"os/exec"
	"testing"
)

// QEMU is the emulator binary the tests run.
const QEMU = "qemu-system-x86_64"

// Require skips the test unless it can boot a VM: not in -short mode, running
// as root, with QEMU installed. With RequiredEnv=1 a missing prerequisite
// fails the test instead.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("VM boot tests are skipped with -short")
	}
	if os.Geteuid() != 0 {
		skipOrFail(t, "VM boot tests need root")
	}
	if _, err := exec.LookPath(QEMU); err != nil {
		skipOrFail(t, QEMU+" not found (Debian package qemu-system-x86)")
	}
}

func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(RequiredEnv) == "1" {
		t.Fatalf("%s (%s=1: not skipping)", reason, RequiredEnv)
	}
	t.Skip(reason)
}
