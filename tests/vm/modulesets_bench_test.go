package vm_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/initramfs"
	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
	"github.com/cfs-deploy/cfs-deploy/tests/vm/vmtest"
)

// BenchmarkModuleSets boots the insecure chain of TestCfsInitBootsInsecure
// with initramfs images built from Debian's whole module tree: the broad
// set (ext4, xfs and btrfs on any common disk, the default before the
// lean one) and the lean default for an ext4 root on virtio_blk. It
// reports cfs-init's modules step and its whole stage, from booted.json.
//
//	CFS_DEPLOY_VM_REQUIRED=1 go test -run '^$' -bench ModuleSets -benchtime 3x ./tests/vm
func BenchmarkModuleSets(b *testing.B) {
	k := vmtest.Kernel(b)
	img, digest := insecureDisk(b)
	initBin := gobuild.T(b, "./cmd/cfs-init")
	for _, c := range []struct {
		name string
		opts initramfs.Options
	}{
		{"broad", initramfs.Options{Modules: initramfs.DefaultModules()}},
		{"lean", initramfs.Options{Default: initramfs.LeanModules(initramfs.Root{FSType: "ext4", Drivers: []string{"virtio_blk", "virtio_pci"}})}},
	} {
		b.Run(c.name, func(b *testing.B) {
			initrd := filepath.Join(b.TempDir(), "initrd.img")
			f, err := os.Create(initrd)
			if err != nil {
				b.Fatal(err)
			}
			opts := c.opts
			opts.Init, opts.ModulesTree, opts.KernelVersion = initBin, k.Root, k.Version
			m, err := initramfs.Build(f, opts)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				b.Fatal(err)
			}
			var modules, stage float64
			for b.Loop() {
				rec := bootInsecure(b, k, initrd, img, digest)
				for _, s := range rec.Timings.Steps {
					if s.Name == "modules" {
						modules += s.MS
					}
				}
				stage += rec.Timings.SinceInit
			}
			b.ReportMetric(float64(m.Size), "initramfs-bytes")
			b.ReportMetric(float64(len(m.Modules)), "modules")
			b.ReportMetric(modules/float64(b.N), "modules-ms")
			b.ReportMetric(stage/float64(b.N), "cfs-init-ms")
		})
	}
}

// bootInsecure boots the disk with the initramfs and returns cfs-init's
// booted.json, which the test OS's init prints.
func bootInsecure(b *testing.B, k *vmtest.KernelTree, initrd, img, digest string) bootRecord {
	vm := vmtest.Boot(b, vmtest.Config{
		Kernel: k.Vmlinuz, Initrd: initrd, Disks: []string{img},
		Append: "loglevel=4 root=/dev/vda rw cfs.reboot-delay=0 composefs=?" + digest,
	})
	line, err := vm.WaitFor("booted: booted.json: ")
	if err != nil {
		b.Fatal(err)
	}
	if code, err := vm.Wait(); err != nil || code != 0 {
		b.Fatalf("QEMU exit status %d (%v)", code, err)
	}
	var rec bootRecord
	_, js, _ := strings.Cut(line, "booted: booted.json: ")
	if err := json.Unmarshal([]byte(js), &rec); err != nil {
		b.Fatalf("booted.json %q: %v", js, err)
	}
	return rec
}
