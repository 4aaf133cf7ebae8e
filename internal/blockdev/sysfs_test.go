package blockdev

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeSysfs lays out the parts of sysfs that SysfsDevice reads: device
// directories, the dev/block links to them, driver links and the module
// links of modular drivers.
type fakeSysfs struct {
	t    *testing.T
	root string
}

func (s fakeSysfs) dir(rel string) string {
	p := filepath.Join(s.root, rel)
	if err := os.MkdirAll(p, 0o755); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// link makes the symlink at rel point to target (relative to the sysfs
// root), with a relative target as sysfs has them.
func (s fakeSysfs) link(rel, target string) {
	at := filepath.Join(s.root, rel)
	s.dir(filepath.Dir(rel))
	r, err := filepath.Rel(filepath.Dir(at), filepath.Join(s.root, target))
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.Symlink(r, at); err != nil {
		s.t.Fatal(err)
	}
}

// driver binds the device at dev to a driver of bus; module is its
// module, "" for a driver built into the running kernel.
func (s fakeSysfs) driver(dev, bus, driver, module string) {
	d := "bus/" + bus + "/drivers/" + driver
	s.dir(d)
	if module != "" {
		s.dir("module/" + module)
		s.link(d+"/module", "module/"+module)
	}
	s.link(dev+"/driver", d)
}

func (s fakeSysfs) block(majmin, dev string) {
	s.dir(dev)
	s.link("dev/block/"+majmin, dev)
}

func TestSysfsDevice(t *testing.T) {
	s := fakeSysfs{t, t.TempDir()}
	s.dir("devices")
	// A partition of a virtio disk: virtio_blk is a module, the PCI
	// transport is built in (no module link, named by its driver).
	virtio := "devices/pci0000:00/0000:00:04.0"
	s.block("254:0", virtio+"/virtio1/block/vda")
	s.block("254:1", virtio+"/virtio1/block/vda/vda1")
	s.driver(virtio+"/virtio1", "virtio", "virtio_blk", "virtio_blk")
	s.driver(virtio, "pci", "virtio-pci", "")
	// A SATA disk: sd is the driver of the SCSI device, sd_mod its module.
	sata := "devices/pci0000:00/0000:00:1f.2"
	s.block("8:2", sata+"/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda2")
	s.driver(sata+"/ata1/host0/target0:0:0/0:0:0:0", "scsi", "sd", "sd_mod")
	s.driver(sata, "pci", "ahci", "ahci")
	// NVMe: the namespace's device is a class device without a driver;
	// the PCI function has nvme; the root port, pcieport (built in).
	s.block("259:1", "devices/pci0000:00/0000:00:1c.0/0000:01:00.0/nvme/nvme0/nvme0n1/nvme0n1p1")
	s.driver("devices/pci0000:00/0000:00:1c.0/0000:01:00.0", "pci", "nvme", "nvme")
	s.driver("devices/pci0000:00/0000:00:1c.0", "pci_express", "pcieport", "")
	// A loop device backed by a disk image.
	s.block("7:0", "devices/virtual/block/loop0")
	if err := os.WriteFile(filepath.Join(s.dir("devices/virtual/block/loop0/loop"), "backing_file"), []byte("/var/tmp/disk.img\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		major, minor uint32
		name         string
		drivers      []string
	}{
		{254, 0, "vda", []string{"virtio_blk", "virtio_pci"}},
		{254, 1, "vda1", []string{"virtio_blk", "virtio_pci"}},
		{8, 2, "sda2", []string{"sd_mod", "ahci"}},
		{259, 1, "nvme0n1p1", []string{"nvme", "pcieport"}},
	} {
		d, err := SysfsDevice(s.root, c.major, c.minor)
		if err != nil {
			t.Errorf("%d:%d: %v", c.major, c.minor, err)
			continue
		}
		if d.Name != c.name || d.Virtual || !slices.Equal(d.Drivers, c.drivers) {
			t.Errorf("%d:%d: %+v, want %s with drivers %v", c.major, c.minor, d, c.name, c.drivers)
		}
	}

	// sd and ahci built into the running kernel: sd is named by its
	// module all the same.
	b := fakeSysfs{t, t.TempDir()}
	scsi := "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0"
	b.block("8:0", scsi+"/block/sda")
	b.driver(scsi, "scsi", "sd", "")
	b.driver("devices/pci0000:00/0000:00:1f.2", "pci", "ahci", "")
	if d, err := SysfsDevice(b.root, 8, 0); err != nil || !slices.Equal(d.Drivers, []string{"sd_mod", "ahci"}) {
		t.Errorf("8:0 with sd built in: %+v, %v", d, err)
	}

	d, err := SysfsDevice(s.root, 7, 0)
	if err != nil || !d.Virtual || d.BackingFile != "/var/tmp/disk.img" || len(d.Drivers) != 0 {
		t.Errorf("loop0: %+v, %v", d, err)
	}
	if _, err := SysfsDevice(s.root, 9, 9); err == nil {
		t.Error("9:9 does not exist: no error")
	}
}

// TestSysfsDeviceHost reads the real sysfs for the disk holding the test's
// temporary directory, when that is a disk.
func TestSysfsDeviceHost(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Stat(t.TempDir(), &st); err != nil {
		t.Fatal(err)
	}
	d, err := SysfsDevice("/sys", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err != nil {
		t.Skipf("the temporary directory is not on a block device sysfs knows: %v", err)
	}
	t.Logf("%d:%d: %+v", unix.Major(st.Dev), unix.Minor(st.Dev), d)
	if !d.Virtual && len(d.Drivers) == 0 {
		t.Errorf("a disk with no driver: %+v", d)
	}
}
