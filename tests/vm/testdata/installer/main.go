// Command installer is the /init of the VM boot tests' installer
// initramfs: it prepares a disk the way an OS installer running on the
// target machine would, with the target's own kernel (the only place where
// fs-verity can be enabled on the disk's files).
//
// It reads /installer.json (see plan), loads the modules it lists, mounts
// the disks and runs the steps in order, copying each command's output to
// the console as "installer| LINE". It ends with INSTALLER-OK, or
// INSTALLER-FAIL and the reason, then unmounts everything (so the disk
// image is clean for debugfs on the host) and powers off either way.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// plan is /installer.json.
type plan struct {
	Modules []string `json:"modules"` // paths in the initramfs, in load order
	Mounts  []mount  `json:"mounts"`  // mounted in order, unmounted in reverse
	Steps   []step   `json:"steps"`
}

type mount struct {
	Device   string `json:"device"`
	Dir      string `json:"dir"`
	FSType   string `json:"fstype"`
	ReadOnly bool   `json:"read_only"`
}

// step is one of: a command (Run, argv; PATH is /bin:/usr/bin), enabling
// fs-verity on a file (Verity), or changing one byte of a file (Flip).
type step struct {
	Run    []string `json:"run,omitempty"`
	Verity string   `json:"verity,omitempty"`
	Flip   *flip    `json:"flip,omitempty"`
}

// flip XORs the byte at Offset of Path with Mask (0: 0xff, every bit).
type flip struct {
	Path   string `json:"path"`
	Offset int64  `json:"offset"`
	Mask   byte   `json:"mask"`
}

var mounted []string

func main() {
	err := run()
	for i := len(mounted) - 1; i >= 0; i-- {
		if uerr := unix.Unmount(mounted[i], 0); uerr != nil {
			fmt.Printf("installer: unmount %s: %v\n", mounted[i], uerr)
			if err == nil {
				err = uerr
			}
		}
	}
	unix.Sync()
	if err != nil {
		fmt.Printf("INSTALLER-FAIL: %v\n", err)
	} else {
		fmt.Println("INSTALLER-OK")
	}
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	os.Exit(1)
}

func run() error {
	for _, m := range []struct{ fstype, dir string }{{"devtmpfs", "/dev"}, {"proc", "/proc"}, {"sysfs", "/sys"}, {"tmpfs", "/tmp"}} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, m.dir, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err)
		}
	}
	fmt.Printf("installer: started at uptime %s\n", uptime())
	b, err := os.ReadFile("/installer.json")
	if err != nil {
		return err
	}
	var p plan
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("/installer.json: %w", err)
	}
	for _, m := range p.Modules {
		if err := loadModule(m); err != nil {
			return err
		}
	}
	for _, m := range p.Mounts {
		if err := mountDisk(m); err != nil {
			return err
		}
	}
	for i, s := range p.Steps {
		if err := runStep(s); err != nil {
			return fmt.Errorf("step %d: %w", i+1, err)
		}
	}
	fmt.Printf("installer: done at uptime %s\n", uptime())
	return nil
}

func loadModule(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", unix.MODULE_INIT_COMPRESSED_FILE)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("loading %s: %w", p, err)
	}
	return nil
}

func mountDisk(m mount) error {
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(m.Device); err == nil {
			break
		} else if time.Since(start) > 10*time.Second {
			return fmt.Errorf("%s did not appear: %w", m.Device, err)
		}
	}
	if err := os.MkdirAll(m.Dir, 0o755); err != nil {
		return err
	}
	var flags uintptr
	if m.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(m.Device, m.Dir, m.FSType, flags, ""); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", m.Device, m.FSType, m.Dir, err)
	}
	mounted = append(mounted, m.Dir)
	fmt.Printf("installer: mounted %s on %s\n", m.Device, m.Dir)
	return nil
}

func runStep(s step) error {
	switch {
	case s.Flip != nil:
		f, err := os.OpenFile(s.Flip.Path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, s.Flip.Offset); err != nil {
			return fmt.Errorf("read byte %d of %s: %w", s.Flip.Offset, s.Flip.Path, err)
		}
		mask := s.Flip.Mask
		if mask == 0 {
			mask = 0xff
		}
		b[0] ^= mask
		if _, err := f.WriteAt(b, s.Flip.Offset); err != nil {
			return fmt.Errorf("write byte %d of %s: %w", s.Flip.Offset, s.Flip.Path, err)
		}
		fmt.Printf("installer: flipped byte %d of %s\n", s.Flip.Offset, s.Flip.Path)
		return f.Sync()
	case s.Verity != "":
		f, err := os.Open(s.Verity)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := verity.Enable(f); err != nil {
			return fmt.Errorf("enable fs-verity on %s: %w", s.Verity, err)
		}
		d, err := verity.Measure(f)
		if err != nil {
			return fmt.Errorf("measure %s: %w", s.Verity, err)
		}
		fmt.Printf("installer: verity %s: %s\n", s.Verity, d)
		return nil
	case len(s.Run) > 0:
		fmt.Printf("installer: $ %s\n", strings.Join(s.Run, " "))
		start := time.Now()
		cmd := exec.Command(s.Run[0], s.Run[1:]...)
		cmd.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin", "HOME=/", "TMPDIR=/tmp", "TERM=dumb"}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		sc := bufio.NewScanner(&out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			fmt.Printf("installer| %s\n", sc.Text())
		}
		code := -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		fmt.Printf("installer: exit %d (%.2fs)\n", code, time.Since(start).Seconds())
		if err != nil {
			return fmt.Errorf("%s: %w", strings.Join(s.Run, " "), err)
		}
		return nil
	}
	return errors.New("empty step")
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
