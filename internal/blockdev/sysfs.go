package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Device is what sysfs says about the hardware behind a block device.
type Device struct {
	Name string // kernel name, "vda1"
	// Path is the device's directory under <sysfs>/devices.
	Path string
	// Virtual is set for devices with no hardware of their own (loop,
	// device-mapper, md, zram): the disk they end up on at boot is not
	// known from here.
	Virtual bool
	// BackingFile is the file a loop device reads, if it says.
	BackingFile string
	// Drivers are the kernel modules of the drivers bound to the device
	// and to every device above it (the disk of a partition, its
	// controller, the bus bridge), nearest first, without repeats. A
	// driver is named by the module it belongs to when sysfs says so,
	// else by the driver's name with '-' as '_' (drivers built into the
	// running kernel have no module link); callers keep the names their
	// kernel has as modules.
	Drivers []string
}

// driverModules names the module of drivers whose name differs from it,
// for when sysfs has no module link (the driver is built in here but may
// be a module in the kernel being booted).
var driverModules = map[string]string{
	"sd": "sd_mod",
	"sr": "sr_mod",
}

// SysfsDevice reads the block device major:minor from the sysfs tree
// mounted at sysfs ("/sys", or a copy of its shape in tests).
func SysfsDevice(sysfs string, major, minor uint32) (Device, error) {
	link := filepath.Join(sysfs, "dev", "block", fmt.Sprintf("%d:%d", major, minor))
	p, err := filepath.EvalSymlinks(link)
	if err != nil {
		return Device{}, fmt.Errorf("block device %d:%d: %w", major, minor, err)
	}
	top, err := filepath.EvalSymlinks(filepath.Join(sysfs, "devices"))
	if err != nil {
		return Device{}, fmt.Errorf("block device %d:%d: %w", major, minor, err)
	}
	rel, err := filepath.Rel(top, p)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return Device{}, fmt.Errorf("block device %d:%d: %s is not under %s", major, minor, p, top)
	}
	d := Device{Name: filepath.Base(p), Path: p}
	if strings.HasPrefix(rel, "virtual/") {
		d.Virtual = true
		if b, err := os.ReadFile(filepath.Join(p, "loop", "backing_file")); err == nil {
			d.BackingFile = strings.TrimSpace(string(b))
		}
		return d, nil
	}
	seen := make(map[string]bool)
	for dir := p; dir != top && strings.HasPrefix(dir, top+"/"); dir = filepath.Dir(dir) {
		mod, err := driverModule(dir)
		if err != nil {
			return d, fmt.Errorf("block device %d:%d: %w", major, minor, err)
		}
		if mod != "" && !seen[mod] {
			seen[mod] = true
			d.Drivers = append(d.Drivers, mod)
		}
	}
	return d, nil
}

// driverModule returns the module of the driver bound to the device in
// dir, "" if none is.
func driverModule(dir string) (string, error) {
	drv, err := os.Readlink(filepath.Join(dir, "driver"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if mod, err := os.Readlink(filepath.Join(dir, "driver", "module")); err == nil {
		return normalize(filepath.Base(mod)), nil
	}
	name := normalize(filepath.Base(drv))
	if m, ok := driverModules[name]; ok {
		return m, nil
	}
	return name, nil
}

func normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }
