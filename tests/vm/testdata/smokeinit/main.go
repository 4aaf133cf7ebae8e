// Command smokeinit is the /init of the VM harness's own smoke tests: it
// proves that the kernel, the initramfs, module loading, a virtio disk and the
// console work before any cfs-deploy code is involved.
//
// It mounts /dev, /proc and /sys, prints the kernel's uptime, then does what
// the kernel command line asks:
//
//	smoke.modules=FILE   load the modules listed in FILE (one path a line), in order
//	smoke.disk=DEV       mount DEV (waiting for it to appear) on /mnt
//	smoke.fstype=TYPE    ... as TYPE (default ext4)
//	smoke.cat=PATH,...     print the content of /mnt/PATH (a digest of it if large)
//	smoke.verity=PATH,...  enable fs-verity on /mnt/PATH and print its digest
//
// On success it prints SMOKE-OK and powers off; on failure it prints
// SMOKE-FAIL and reboots, as a boot path that gives up would.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	err := run()
	unix.Unmount("/mnt", 0)
	unix.Sync()
	if err != nil {
		fmt.Printf("SMOKE-FAIL: %v\n", err)
		unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	} else {
		fmt.Println("SMOKE-OK")
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
	// Only reached if reboot(2) failed; exiting makes the kernel panic,
	// and panic=-1 reboots.
	os.Exit(1)
}

func run() error {
	for _, m := range []struct{ fstype, dir string }{{"devtmpfs", "/dev"}, {"proc", "/proc"}, {"sysfs", "/sys"}} {
		if err := unix.Mount(m.fstype, m.dir, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err)
		}
	}
	uptime, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return err
	}
	fmt.Printf("smoke: uptime %s s\n", strings.Fields(string(uptime))[0])

	opts, err := cmdline()
	if err != nil {
		return err
	}
	if list := opts["smoke.modules"]; list != "" {
		if err := loadModules(list); err != nil {
			return err
		}
	}
	dev := opts["smoke.disk"]
	if dev == "" {
		return nil
	}
	if err := waitFor(dev, 5*time.Second); err != nil {
		return err
	}
	fstype := opts["smoke.fstype"]
	if fstype == "" {
		fstype = "ext4"
	}
	if err := os.MkdirAll("/mnt", 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, "/mnt", fstype, 0, ""); err != nil {
		return fmt.Errorf("mount %s (%s) on /mnt: %w", dev, fstype, err)
	}
	fmt.Printf("smoke: mounted %s\n", dev)
	for _, p := range list(opts["smoke.cat"]) {
		data, err := os.ReadFile("/mnt/" + p)
		if err != nil {
			return err
		}
		if len(data) <= 200 {
			fmt.Printf("smoke: cat %s: %q\n", p, data)
		} else {
			fmt.Printf("smoke: cat %s: %d bytes sha256:%x\n", p, len(data), sha256.Sum256(data))
		}
	}
	for _, p := range list(opts["smoke.verity"]) {
		digest, err := enableVerity("/mnt/" + p)
		if err != nil {
			return fmt.Errorf("fs-verity on %s: %w", p, err)
		}
		fmt.Printf("smoke: verity %s: sha256:%s\n", p, digest)
	}
	return nil
}

func cmdline() (map[string]string, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, err
	}
	opts := make(map[string]string)
	for _, f := range strings.Fields(string(b)) {
		k, v, _ := strings.Cut(f, "=")
		opts[k] = v
	}
	return opts, nil
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func loadModules(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	for _, p := range strings.Fields(string(b)) {
		start := time.Now()
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", unix.MODULE_INIT_COMPRESSED_FILE)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("loading %s: %w", p, err)
		}
		fmt.Printf("smoke: loaded %s (%v)\n", p, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func waitFor(path string, limit time.Duration) error {
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		} else if time.Since(start) > limit {
			return fmt.Errorf("%s did not appear within %v: %w", path, limit, err)
		}
	}
}

// enableVerity turns fs-verity on for path (SHA-256, 4 KiB blocks, no salt:
// the parameters composefs uses) and returns the digest the kernel measures.
func enableVerity(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	arg := unix.FsverityEnableArg{Version: 1, Hash_algorithm: unix.FS_VERITY_HASH_ALG_SHA256, Block_size: 4096}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_ENABLE_VERITY, uintptr(unsafe.Pointer(&arg))); errno != 0 && errno != unix.EEXIST {
		return "", fmt.Errorf("FS_IOC_ENABLE_VERITY: %w", errno)
	}
	// struct fsverity_digest { __u16 digest_algorithm; __u16 digest_size; __u8 digest[]; }
	var buf [4 + 64]byte
	*(*uint16)(unsafe.Pointer(&buf[2])) = 64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_MEASURE_VERITY, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return "", fmt.Errorf("FS_IOC_MEASURE_VERITY: %w", errno)
	}
	size := *(*uint16)(unsafe.Pointer(&buf[2]))
	return hex.EncodeToString(buf[4 : 4+size]), nil
}
