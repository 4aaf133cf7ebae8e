package vmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// OVMF firmware (Debian package ovmf). The 4 MB code and variable stores
// belong together: 4 MB code with the 2 MB variable store boots but keeps
// no variables. The Secure Boot (.ms) pair would refuse the unsigned
// systemd-boot.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// UEFIConfig describes one boot through the firmware: OVMF starts the boot
// loader it finds on the first disk with an EFI System Partition
// (MakeESPDisk), which reads its entries and starts a kernel. Nothing is
// handed to QEMU directly, so what boots is what the ESP says.
type UEFIConfig struct {
	// Vars is the firmware's writable variable store (NewOVMFVars). A test
	// that boots the same machine again passes the same file, as it
	// passes the same disks.
	Vars string
	// Disks are raw images attached as virtio-blk in order: the ESP disk
	// first, then the root disk.
	Disks    []string
	MemoryMB int           // default 1024
	Timeout  time.Duration // for the whole boot; default 2 min (firmware and loader add 4-20 s under TCG)
	QEMUArgs []string      // extra arguments, appended last
}

// RequireUEFI is Require plus the firmware, systemd-boot and the disk
// tools (Debian packages ovmf, systemd-boot-efi, mtools, dosfstools,
// fdisk).
func RequireUEFI(t testing.TB) {
	t.Helper()
	Require(t)
	for _, f := range []struct{ path, pkg string }{
		{OVMFCode, "ovmf"}, {OVMFVars, "ovmf"}, {SystemdBootEFI, "systemd-boot-efi"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			skipOrFail(t, fmt.Sprintf("%s not found (Debian package %s)", f.path, f.pkg))
		}
	}
	for _, tool := range []struct{ name, pkg string }{
		{"mcopy", "mtools"}, {"mkfs.vfat", "dosfstools"}, {"sfdisk", "fdisk"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			skipOrFail(t, fmt.Sprintf("%s not found (Debian package %s)", tool.name, tool.pkg))
		}
	}
}

// NewOVMFVars returns a fresh writable copy of the firmware's variable
// store in the test's temporary directory: one per machine.
func NewOVMFVars(t testing.TB) string {
	t.Helper()
	RequireUEFI(t)
	b, err := os.ReadFile(OVMFVars)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "OVMF_VARS.fd")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// BootUEFI starts QEMU with OVMF (q35, TCG, one vCPU, -no-reboot) and no
// -kernel: the machine boots from its disks. A guest that reboots ends
// QEMU, so a test of several boots calls BootUEFI again with the same
// disks and variable store. Standard input is /dev/null, since a key
// press would open systemd-boot's menu.
func BootUEFI(t testing.TB, cfg UEFIConfig) *VM {
	t.Helper()
	RequireUEFI(t)
	if cfg.Vars == "" {
		t.Fatal("BootUEFI: no variable store (NewOVMFVars)")
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 1024
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	for _, p := range []string{OVMFCode, cfg.Vars} {
		if strings.Contains(p, ",") {
			t.Fatalf("firmware path %q: QEMU's -drive cannot take a comma", p)
		}
	}
	args := []string{
		"-accel", "tcg", "-cpu", "max", "-machine", "q35",
		"-smp", "1", "-m", fmt.Sprint(cfg.MemoryMB), // one vCPU: see Boot
		"-nographic", "-no-reboot", "-nic", "none",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + OVMFCode,
		"-drive", "if=pflash,format=raw,file=" + cfg.Vars,
	}
	args = append(args, diskArgs(t, cfg.Disks)...)
	args = append(args, cfg.QEMUArgs...)
	return startQEMU(t, args, cfg.Timeout)
}

// printkTime is the kernel's timestamp at the start of a console line.
var printkTime = regexp.MustCompile(`^\[\s*(\d+\.\d+)\]`)

// KernelStart estimates when the kernel started, measured from QEMU's
// start: for every console line stamped with the kernel's uptime, the line
// arrived at least that long after the kernel started, so the smallest
// arrival minus uptime is the closest bound. With -kernel this is QEMU's
// own set-up; through UEFI it is the firmware plus the boot loader. It
// reports false when no line carried a timestamp.
func (vm *VM) KernelStart() (time.Duration, bool) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	best, found := time.Duration(0), false
	for i, l := range vm.lines {
		m := printkTime.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		up, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			continue
		}
		if d := vm.arrived[i] - time.Duration(up*float64(time.Second)); !found || d < best {
			best, found = d, true
		}
	}
	return best, found
}

// Seen returns when the first console line containing marker arrived,
// measured from QEMU's start.
func (vm *VM) Seen(marker string) (time.Duration, bool) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	for i, l := range vm.lines {
		if strings.Contains(l, marker) {
			return vm.arrived[i], true
		}
	}
	return 0, false
}
