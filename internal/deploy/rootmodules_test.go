package deploy

import (
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/blockdev"
	"github.com/cfs-deploy/cfs-deploy/internal/initramfs"
)

func TestRootFromMount(t *testing.T) {
	virtio := blockdev.Device{Name: "vda", Drivers: []string{"virtio_blk", "virtio_pci"}}
	r, what, warn := rootFromMount("/sysroot", "ext4", "", "", virtio, nil)
	if r.FSType != "ext4" || !slices.Equal(r.Drivers, virtio.Drivers) || len(warn) != 0 || what != "ext4 root on vda (virtio_blk, virtio_pci)" {
		t.Errorf("ext4 on virtio: %+v %q %v", r, what, warn)
	}
	mods := initramfs.LeanModules(r)
	for _, m := range []string{"ext4", "virtio_blk", "erofs", "overlay", "loop"} {
		if !slices.Contains(mods, m) {
			t.Errorf("lean set %v lacks %s", mods, m)
		}
	}
	for _, m := range []string{"xfs", "btrfs", "nvme", "ahci"} {
		if slices.Contains(mods, m) {
			t.Errorf("lean set %v has %s", mods, m)
		}
	}

	// A loop device: the file system is known, the disk is not.
	loop := blockdev.Device{Name: "loop0", Virtual: true, BackingFile: "/var/tmp/disk.img"}
	r, _, warn = rootFromMount("/mnt", "ext4", "", "", loop, nil)
	if r.FSType != "ext4" || r.Drivers != nil || len(warn) != 1 || !strings.Contains(warn[0], "/var/tmp/disk.img") || !strings.Contains(warn[0], "--module nvme") {
		t.Errorf("loop: %+v %v", r, warn)
	}
	if mods := initramfs.LeanModules(r); !slices.Contains(mods, "nvme") || slices.Contains(mods, "xfs") {
		t.Errorf("loop: set %v", mods)
	}
	// sysfs knows no driver, or the device could not be read.
	for _, c := range []struct {
		dev blockdev.Device
		err error
	}{{blockdev.Device{Name: "vdz"}, nil}, {blockdev.Device{}, errors.New("no sysfs")}} {
		if r, _, warn := rootFromMount("/mnt", "xfs", "", "", c.dev, c.err); r.FSType != "xfs" || r.Drivers != nil || len(warn) != 1 {
			t.Errorf("%+v %v: %+v %v", c.dev, c.err, r, warn)
		}
	}
	// root= names another file system than the sysroot's: the broad set.
	r, _, warn = rootFromMount("/sysroot", "ext4", "5ab981b8-690b-4102-8385-615a5dfaf92f", "UUID=0f3c55aa-1b2c-4d5e-8f90-a1b2c3d4e5f6", virtio, nil)
	if r.FSType != "" || r.Drivers != nil || len(warn) != 1 || !strings.Contains(warn[0], "UUID=5ab981b8") {
		t.Errorf("another root: %+v %v", r, warn)
	}
	// The same UUID (in capitals), or a root= other than UUID=: detected.
	for _, spec := range []string{"UUID=5AB981B8-690B-4102-8385-615A5DFAF92F", "/dev/vda", "LABEL=root", ""} {
		if r, _, warn := rootFromMount("/sysroot", "ext4", "5ab981b8-690b-4102-8385-615a5dfaf92f", spec, virtio, nil); r.FSType != "ext4" || r.Drivers == nil || len(warn) != 0 {
			t.Errorf("root=%s: %+v %v", spec, r, warn)
		}
	}
	// Not a file system cfs-init mounts as the root: the broad set.
	if r, _, warn := rootFromMount("/tmp/x", "tmpfs", "", "", blockdev.Device{}, errors.New("not a block device")); r.FSType != "" || r.Drivers != nil || len(warn) != 1 || !strings.Contains(warn[0], "tmpfs") {
		t.Errorf("tmpfs: %+v %v", r, warn)
	}
}

var koName = regexp.MustCompile(`usr/lib/modules/[^/\x00]+/kernel/[^\x00]+\.ko\.xz\x00`)

// TestRolloutModuleSet: the module set is part of the built initramfs's
// name, an explicit set replaces the default one, and a module the kernel
// lacks fails the rollout with its name and the kernel's.
func TestRolloutModuleSet(t *testing.T) {
	f := newFixture(t)
	f.commit("os", "1")
	roll := func(set, extra []string) (*Result, error) {
		return Rollout(Options{
			Repo: f.r, Sysroot: f.sysroot, BootDir: f.boot, Ref: "os", Root: "/dev/vda",
			Init: f.init, AllowInsecure: true, ModuleSet: set, Modules: extra,
		})
	}
	def, err := roll(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("default: %s, warnings %v", def.Initramfs, def.Warnings)
	ext4, err := roll([]string{"ext4"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	plus, err := roll([]string{"ext4"}, []string{"loop"})
	if err != nil {
		t.Fatal(err)
	}
	if ext4.Initramfs == def.Initramfs || plus.Initramfs == ext4.Initramfs || !ext4.InitramfsBuilt || ext4.InitramfsReused {
		t.Errorf("initramfs default %s, ext4 %s, ext4+loop %s: the module set is not in the name", def.Initramfs, ext4.Initramfs, plus.Initramfs)
	}
	if again, err := roll([]string{"ext4"}, nil); err != nil || again.Initramfs != ext4.Initramfs || !again.InitramfsReused {
		t.Errorf("the same set again: %+v %v", again, err)
	}
	// The module files in an image, by the names in the cpio headers.
	list := func(img string) []string {
		t.Helper()
		fh, err := os.Open(img)
		f.must(err)
		defer fh.Close()
		z, err := gzip.NewReader(fh)
		f.must(err)
		raw, err := io.ReadAll(z)
		f.must(err)
		var mods []string
		for _, m := range koName.FindAll(raw, -1) {
			mods = append(mods, filepath.Base(string(m[:len(m)-1])))
		}
		return mods
	}
	if got := list(ext4.Initramfs); len(got) != 5 || !slices.Contains(got, "ext4.ko.xz") || slices.Contains(got, "erofs.ko.xz") {
		t.Errorf("--modules ext4 image holds %v", got)
	}
	if got := list(plus.Initramfs); len(got) != 6 || !slices.Contains(got, "loop.ko.xz") {
		t.Errorf("--modules ext4 --module loop image holds %v", got)
	}
	if got := list(def.Initramfs); !slices.Contains(got, "erofs.ko.xz") || slices.Contains(got, "xfs.ko.xz") && len(def.Warnings) == 0 {
		t.Errorf("default image holds %v (warnings %v)", got, def.Warnings)
	}

	for _, c := range [][2][]string{{{"ext4", "no_such_mod"}, nil}, {nil, {"no_such_mod"}}} {
		_, err := roll(c[0], c[1])
		if err == nil || !strings.Contains(err.Error(), "no_such_mod") || !strings.Contains(err.Error(), f.kver) {
			t.Errorf("--modules %v --module %v: %v, want an error naming no_such_mod and kernel %s", c[0], c[1], err, f.kver)
		}
	}
}
