package vm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/dracut"
	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
	"github.com/cfs-deploy/cfs-deploy/tests/vm/vmtest"
)

// The dracut path: the installed verity disk booted with a generic systemd
// initramfs that dracut built with the cfs-deploy module (dracut/), in
// place of cfs-init's own. systemd mounts the physical root on /sysroot,
// cfs-setup-root.service runs `cfs-init setup-root`, and systemd switches
// into the verified root; a refused image must reboot, not wait in
// dracut's emergency shell.

// dracutModules is the smallest set of dracut modules that boots a systemd
// initramfs from a block device; each module more costs build and boot
// time under TCG. cfs-deploy adds what it depends on.
var dracutModules = []string{"base", "systemd", "systemd-initrd", "dracut-systemd", "rootfs-block", "udev-rules", "fs-lib"}

// dracutDrivers are the root disk's controller and file system: the build
// host need not use them, so hostonly mode would not find them.
var dracutDrivers = []string{"virtio_blk", "ext4", "crc32c_generic"}

// dracutBuild is one image, built once per TestDeployBoot run.
type dracutBuild struct {
	done chan struct{} // closed when the build ended; then the rest is set
	path string
	size int64
	took time.Duration
	err  error
}

var dracutBuilds struct {
	sync.Mutex
	m map[string]*dracutBuild // by fixture directory and mode
}

func dracutMode(hostOnly bool) string {
	if hostOnly {
		return "hostonly"
	}
	return "no-hostonly"
}

// startDracutBuild starts building the dracut initramfs for the test OS's
// kernel from the modules in the test OS tree, as `rollout --initramfs
// dracut` builds it from the commit's tree, unless it was started before.
// dracut spends its time in forks and file copies more than on a CPU, so
// two builds side by side take little longer than one.
func (f *fixture) startDracutBuild(hostOnly bool) *dracutBuild {
	dracutBuilds.Lock()
	defer dracutBuilds.Unlock()
	if dracutBuilds.m == nil {
		dracutBuilds.m = map[string]*dracutBuild{}
	}
	key := f.dir + " " + dracutMode(hostOnly)
	b := dracutBuilds.m[key]
	if b == nil {
		b = &dracutBuild{done: make(chan struct{})}
		dracutBuilds.m[key] = b
		go func() {
			defer close(b.done)
			start := time.Now()
			b.err = f.buildDracut(hostOnly, b)
			b.took = time.Since(start)
		}()
	}
	return b
}

// dracutImage waits for the image's build.
func (f *fixture) dracutImage(t *testing.T, hostOnly bool) *dracutBuild {
	t.Helper()
	b := f.startDracutBuild(hostOnly)
	<-b.done
	if b.err != nil {
		t.Fatalf("building the dracut %s initramfs failed: %v", dracutMode(hostOnly), b.err)
	}
	t.Logf("dracut %s image: %d bytes, built in %v", dracutMode(hostOnly), b.size, b.took.Round(100*time.Millisecond))
	return b
}

func (f *fixture) buildDracut(hostOnly bool, b *dracutBuild) error {
	root, err := gobuild.ModuleRoot()
	if err != nil {
		return err
	}
	work := filepath.Join(f.dir, "dracut-"+dracutMode(hostOnly))
	kmods, err := dracut.ExtractModules(os.DirFS(f.tree), f.k.Version, filepath.Join(work, "modules"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := dracut.Build(ctx, filepath.Join(work, "initramfs.img"), dracut.Options{
		KernelVersion: f.k.Version,
		ModulesDir:    kmods,
		Init:          f.initBin,
		HostOnly:      hostOnly,
		Modules:       dracutModules,
		Drivers:       dracutDrivers,
		// zstd at dracut's level costs seconds to build and the guest
		// little to unpack; no compression is the other way round, and
		// the build matters more in a test run.
		Compression:      "none",
		ModuleSource:     filepath.Join(root, "dracut", "90cfs-deploy"),
		IgnoreHostConfig: true,
	})
	if err != nil {
		return err
	}
	b.path, b.size = res.Path, res.Size
	return nil
}

// requireDracut skips the test without dracut (fails with
// CFS_DEPLOY_VM_REQUIRED=1).
func requireDracut(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("dracut"); err != nil {
		if os.Getenv(vmtest.RequiredEnv) == "1" {
			t.Fatalf("dracut not found (Debian packages dracut-core and udev); %s=1: not skipping", vmtest.RequiredEnv)
		}
		t.Skip("dracut not found (Debian packages dracut-core and udev)")
	}
}

// bootDracut boots disk with the entry's kernel and options (or options)
// and the dracut image, with the knobs f.boot adds.
func (f *fixture) bootDracut(t *testing.T, disk string, in *install, img *dracutBuild, options string, knobs ...string) *vmtest.VM {
	t.Helper()
	if options == "" {
		options = in.entry.Options
	}
	return vmtest.Boot(t, vmtest.Config{
		Kernel:   in.entry.Kernel,
		Initrd:   img.path,
		Disks:    []string{disk},
		Append:   strings.Join(append([]string{options, "loglevel=4 cfs.debug cfs.reboot-delay=0"}, knobs...), " "),
		MemoryMB: 1024,
		Timeout:  bootTimeout,
	})
}

// bootMode is the mode field of the boot record the test init printed.
func bootMode(t *testing.T, out string) string {
	t.Helper()
	js := strings.TrimPrefix(consoleLine(out, "cfstest: booted.json "), "cfstest: booted.json ")
	var r struct {
		Mode string `json:"mode"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(js)), &r); err != nil {
		t.Fatalf("booted.json as the test init printed it: %v\n%q", err, js)
	}
	return r.Mode
}

// stageTime is how long a boot took to reach the test OS's init: the
// guest's uptime then (kernel start to init), and the host's time from
// QEMU's start. Under TCG on a loaded host the guest's clock can run fast
// or slow (its TSC calibration suffers), so both are kept.
type stageTime struct {
	guest float64       // seconds of guest uptime
	host  time.Duration // QEMU start to the CFSTEST-INIT line
}

func measureStage(vm *vmtest.VM) (stageTime, bool) {
	var st stageTime
	_, rest, ok := strings.Cut(vm.Output(), "CFSTEST-INIT uptime=")
	if !ok {
		return st, false
	}
	v, _, _ := strings.Cut(rest, " ")
	up, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return st, false
	}
	st.guest = up
	st.host, ok = vm.Seen("CFSTEST-INIT")
	return st, ok
}

func (f *fixture) testDracut(t *testing.T) {
	requireDracut(t)
	in := f.installed(t, "verity")
	// Both builds before any boot, so that none runs beside a boot
	// whose time is measured.
	for _, b := range []*dracutBuild{f.startDracutBuild(true), f.startDracutBuild(false)} {
		// A build that no selected scenario waited for must not outlive
		// the fixture's directory.
		defer func() { <-b.done }()
	}
	reads := []string{"/usr/share/test/tiny.txt", "/usr/share/test/big.bin", "/etc/hostname", "/var/lib/cfstest/seed.txt"}
	stage := map[string]stageTime{}

	verified := func(t *testing.T, img *dracutBuild) {
		vm := f.bootDracut(t, f.diskCopy(t, in), in, img, "", "cfstest.read="+strings.Join(reads, ","))
		out := f.waitDone(t, vm, in)
		if m := bootMode(t, out); m != "setup-root" {
			t.Errorf("booted.json mode %q: want setup-root (cfs-init run by the dracut module's unit)", m)
		}
		r := bootRecordOf(t, vm.Output())
		if r.Digest != in.image || r.Insecure || !r.KernelVerity {
			t.Errorf("booted.json: digest %s insecure %v kernel_verity %v; want %s, false, true", r.Digest, r.Insecure, r.KernelVerity, in.image)
		}
		root := mountLine(out, "/")
		if root == nil || root[2] != "overlay" || !hasOption(root[3], "ro") || !hasOption(root[3], "verity=require") {
			t.Errorf("/ should be the composefs overlay, read-only, with verity=require; /proc/mounts has %q", root)
		}
		for _, m := range []string{"/etc", "/var"} {
			if l := mountLine(out, m); l == nil || l[2] != "ext4" || !hasOption(l[3], "rw") {
				t.Errorf("%s should be a writable mount of the deployment's state; /proc/mounts has %q", m, l)
			}
		}
		f.checkReads(t, out, reads)
		if !strings.Contains(out, "systemd") {
			t.Error("the console shows no sign of systemd: was this dracut's initramfs?")
		}
		if st, ok := measureStage(vm); ok {
			stage[t.Name()] = st
		}
	}

	t.Run("hostonly", func(t *testing.T) {
		img := f.dracutImage(t, true)
		t.Run("verified", func(t *testing.T) { verified(t, img) })

		// The image replaced offline by a changed copy without fs-verity:
		// refused, and the machine reboots so that a boot loader can
		// fall back, instead of waiting in an emergency shell.
		t.Run("tampered-image", func(t *testing.T) {
			disk := f.diskCopy(t, in)
			tm := f.imageTamper(t, in)
			replaceOnDisk(t, disk, tm.obj, tm.forged)
			vm := f.bootDracut(t, disk, in, img, "", "cfstest.read=/usr/share/test/tiny.txt")
			f.expectRefused(t, vm, in, in.image, "fs-verity is not enabled")
			if strings.Contains(vm.Output(), "Entering emergency mode") {
				t.Error("dracut opened its emergency shell although cfs.emergency was not given")
			}
		})

		// Without composefs= the physical root must not boot unverified.
		// With cfs.emergency the documented emergency shell opens instead
		// of the reboot.
		t.Run("no-composefs-emergency", func(t *testing.T) {
			vm := f.bootDracut(t, f.diskCopy(t, in), in, img, replaceArg(in.entry.Options, "composefs", ""), "cfs.emergency")
			line, err := vm.WaitFor("refusing to boot")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(line, "composefs=") {
				t.Errorf("cfs-init's message does not name composefs=: %q", line)
			}
			if _, err := vm.WaitFor("Entering emergency mode"); err != nil {
				t.Fatalf("cfs.emergency: %v", err)
			}
			vm.Kill()
			if strings.Contains(vm.Output(), "CFSTEST-INIT") {
				t.Error("the test OS's init ran from the unverified physical root")
			}
		})
	})

	t.Run("no-hostonly", func(t *testing.T) {
		img := f.dracutImage(t, false)
		t.Run("verified", func(t *testing.T) { verified(t, img) })
	})

	// cfs-init's own initramfs on the same disk under the same
	// conditions, for the comparison.
	t.Run("cfs-init-reference", func(t *testing.T) {
		vm := f.boot(t, f.diskCopy(t, in), in, "")
		f.waitDone(t, vm, in)
		if st, ok := measureStage(vm); ok {
			stage[t.Name()] = st
		}
	})
	ref, haveRef := stage[t.Name()+"/cfs-init-reference"]
	var b strings.Builder
	if haveRef {
		fmt.Fprintf(&b, "cfs-init's initramfs: %d bytes; kernel start to the OS's init %.2f s (guest clock), QEMU start to init %.2f s (host)\n",
			in.entry.InitrdSize, ref.guest, ref.host.Seconds())
	}
	for _, mode := range []string{"hostonly", "no-hostonly"} {
		st, ok := stage[t.Name()+"/"+mode+"/verified"]
		if !ok {
			continue
		}
		// It booted, so its build is done.
		bl := f.startDracutBuild(mode == "hostonly")
		fmt.Fprintf(&b, "dracut %s initramfs: %d bytes (uncompressed, built in %v); kernel start to the OS's init %.2f s, QEMU start to init %.2f s",
			mode, bl.size, bl.took.Round(100*time.Millisecond), st.guest, st.host.Seconds())
		if haveRef && ref.guest > 0 && ref.host > 0 {
			fmt.Fprintf(&b, " (%.1fx and %.1fx cfs-init's)", st.guest/ref.guest, st.host.Seconds()/ref.host.Seconds())
		}
		b.WriteString("\n")
	}
	t.Logf("initramfs stage under TCG:\n%s", b.String())
}
