package initramfs

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/kmod"
	"github.com/cfs-deploy/cfs-deploy/internal/kmod/kmodtest"
)

func TestLeanModules(t *testing.T) {
	for _, c := range []struct {
		root Root
		want []string
	}{
		{Root{FSType: "ext4", Drivers: []string{"virtio_blk", "virtio_pci"}},
			[]string{"crc32c_generic", "crc32c-intel", "sha256-ssse3", "virtio_blk", "virtio_pci", "ext4", "erofs", "overlay", "loop"}},
		{Root{FSType: "ext3", Drivers: []string{"nvme"}},
			[]string{"crc32c_generic", "crc32c-intel", "sha256-ssse3", "nvme", "ext4", "erofs", "overlay", "loop"}},
		// The disk is not known (a loop device): the common controllers.
		{Root{FSType: "xfs"},
			[]string{"crc32c_generic", "crc32c-intel", "sha256-ssse3", "virtio_blk", "virtio_pci", "virtio_scsi", "ahci", "nvme", "sd_mod", "xfs", "erofs", "overlay", "loop"}},
		// Nothing known: the broad set.
		{Root{}, []string{"crc32c_generic", "crc32c-intel", "sha256-ssse3", "virtio_blk", "virtio_pci", "virtio_scsi", "ahci", "nvme", "sd_mod",
			"ext4", "xfs", "btrfs", "erofs", "overlay", "loop"}},
	} {
		if got := LeanModules(c.root); !slices.Equal(got, c.want) {
			t.Errorf("%+v: %v, want %v", c.root, got, c.want)
		}
	}
	if !slices.Equal(DefaultModules(), LeanModules(Root{})) {
		t.Error("DefaultModules is not the set for an unknown root")
	}
}

// TestLeanDebian builds the lean image for an ext4 root on a virtio disk
// from Debian's kernel: ext4 and what it needs, virtio_blk, composefs's
// modules, and none of the other root file systems and their helpers.
func TestLeanDebian(t *testing.T) {
	tr := kmodtest.Kernel(t)
	init := initBinary(t)
	lean := LeanModules(Root{FSType: "ext4", Drivers: []string{"virtio_blk", "virtio_pci"}})
	// The tree without the kernel's configuration: loop stays.
	pristine, _ := kmodtest.PristineCopy(t, tr)
	img, m := build(t, Options{Init: init, ModulesTree: pristine, KernelVersion: tr.Version, Default: lean})
	var names []string
	for _, mod := range m.Modules {
		names = append(names, mod.Name)
	}
	slices.Sort(names)
	want := []string{"crc16", "crc32c_generic", "crc32c_intel", "erofs", "ext4", "jbd2", "loop", "mbcache", "overlay", "sha256_ssse3", "virtio_blk"}
	// erofs needs libcrc32c in some kernel configurations.
	names = slices.DeleteFunc(names, func(n string) bool { return n == "libcrc32c" })
	if !slices.Equal(names, want) {
		t.Errorf("modules %v, want %v", names, want)
	}
	if !slices.Contains(m.Builtin, "virtio_pci") {
		t.Errorf("virtio_pci is built into Debian's kernel; builtin %v", m.Builtin)
	}

	// Debian's package has /boot/config-<kver>, which says EROFS mounts
	// from a file: no loop, and a note says why.
	img, withConfig := build(t, Options{Init: init, ModulesTree: tr.Root, KernelVersion: tr.Version, Default: lean})
	if slices.ContainsFunc(withConfig.Modules, func(m kmod.Module) bool { return m.Name == "loop" }) ||
		!slices.ContainsFunc(withConfig.Notes, func(n string) bool { return strings.Contains(n, "CONFIG_EROFS_FS_BACKED_BY_FILE") }) {
		t.Errorf("with the kernel's configuration: modules %v, notes %v", withConfig.LoadList, withConfig.Notes)
	}
	// Named explicitly, loop is kept whatever the configuration says.
	if _, m := build(t, Options{Init: init, ModulesTree: tr.Root, KernelVersion: tr.Version, Modules: []string{"loop"}}); len(m.Modules) != 1 {
		t.Errorf("--modules loop: %v", m.LoadList)
	}
	_, broad := build(t, Options{Init: init, ModulesTree: tr.Root, KernelVersion: tr.Version})
	t.Logf("lean image: %d bytes, %d modules; broad default: %d bytes, %d modules", len(img), len(withConfig.Modules), broad.Size, len(broad.Modules))
	if len(img) >= 4_000_000 {
		t.Errorf("lean image is %d bytes, want < 4 MB", len(img))
	}

	// A default member the kernel lacks is skipped; a named one is an
	// error that says which module and which kernel.
	_, m2 := build(t, Options{Init: init, ModulesTree: tr.Root, KernelVersion: tr.Version, Default: append(lean, "pcieport")})
	if !slices.Contains(m2.Skipped, "pcieport") {
		t.Errorf("pcieport (built in, no such module): skipped %v", m2.Skipped)
	}
	for _, opts := range []Options{
		{Modules: []string{"ext4", "no_such_mod"}},
		{Extra: []string{"no_such_mod"}},
		{Default: lean, Extra: []string{"no_such_mod"}},
	} {
		opts.Init, opts.ModulesTree, opts.KernelVersion = init, tr.Root, tr.Version
		_, err := Build(io.Discard, opts)
		if err == nil || !strings.Contains(err.Error(), "no_such_mod") || !strings.Contains(err.Error(), "kernel "+tr.Version) {
			t.Errorf("%v + %v: error %v, want one naming no_such_mod and kernel %s", opts.Modules, opts.Extra, err, tr.Version)
		}
	}
}
