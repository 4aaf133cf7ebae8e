package initboot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"

	"golang.org/x/sys/unix"
)

// Paths of the PID 1 boot. The physical root and the image's EROFS layer
// are mounted under /run (sysroot.PhysicalRootDir, sysroot.ImageMountDir)
// from the start: /run moves into the new root whole, so the root's
// overlay options name paths that exist on the booted system.
const (
	newrootDir = "/newroot" // the new root while it is being built
	runDir     = "/run"     // moved into the new root
	shellPath  = "/bin/sh"  // emergency shell, if the initramfs has one
	// sysrootDir is where the booted system sees the physical root too,
	// bound there when the image has the directory (as ostree systems
	// have it).
	sysrootDir = "/sysroot"
)

// RunPID1 boots the system as the initramfs's /init. It never returns:
// either it executes the new root's init, or it reports the failure and
// reboots (or waits in an emergency shell). A panic is reported and
// handled like any other failure, since PID 1 exiting panics the kernel.
func RunPID1() {
	log := NewLog(os.Stdout, nil, false)
	f := &failer{log: log, shell: shellPath}
	defer func() {
		if r := recover(); r != nil {
			f.fail(panicError(r))
		}
	}()
	err := bootPID1(log, f)
	if err == nil {
		err = errors.New("switching root returned without executing init")
	}
	f.fail(err)
}

func bootPID1(log *Log, f *failer) error {
	t := log.Begin("api-mounts")
	if err := mountAPI(log); err != nil {
		return during("set up /proc, /sys, /dev and /run", err)
	}
	if k, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		log.SetKmsg(k)
	}
	t.End("mounted /proc, /sys, /dev and /run")

	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return during("read the kernel command line", err)
	}
	plan, err := NewPlan(strings.TrimSpace(string(cmdline)))
	if err != nil {
		f.plan = failurePlan(string(cmdline))
		return during("use the kernel command line", err)
	}
	f.plan = plan
	log.SetDebug(plan.Debug)
	log.Debugf("started %v after the kernel; command line: %s", fmtDuration(log.start), strings.TrimSpace(string(cmdline)))
	if len(plan.Unknown) > 0 {
		log.Printf("warning: unknown options %s ignored (known: %s)", strings.Join(plan.Unknown, " "), bootcfg.CFSKnown)
	}

	t = log.Begin("modules")
	f.moduleErr = loadModules(ModulesBase, plan, log)
	t.End("loaded kernel modules")

	t = log.Begin("wait-root")
	dev, err := waitRoot(plan, NewDevices(), log)
	if err != nil {
		return err
	}
	t.End("found root device %s", dev)

	t = log.Begin("mount-root")
	fstype, ro, err := mountRoot(plan, dev, sysroot.PhysicalRootDir, log)
	if err != nil {
		return err
	}
	mode := "rw"
	if ro {
		mode = "ro"
	}
	t.End("mounted %s on %s (%s, %s)", dev.Node, sysroot.PhysicalRootDir, fstype, mode)

	img, dep, err := assembleRoot(log, plan, sysroot.PhysicalRootDir, sysroot.ImageMountDir, newrootDir)
	if err != nil {
		return err
	}
	t = log.Begin("check-init")
	if err := checkInit(newrootDir, plan.Init); err != nil {
		return during("find init in the image", err)
	}
	t.End("")

	t = log.Begin("move-mounts")
	run, sysrootSeen, err := moveIntoNewRoot(newrootDir, log)
	if err != nil {
		return during("move the mounts into the new root", err)
	}
	t.End("moved /run (with the physical root and the image), /dev, /proc and /sys into the new root")

	rec := &BootRecord{Mode: "pid1", Device: dev.Node, FSType: fstype, ReadOnly: ro, Init: plan.Init}
	fillRecord(rec, img, dep, sysrootSeen)
	rec.Timings = log.timing()
	writeRecords(log, run, rec, bootUnits(rootMounts{
		Device: dev.Node, FSType: fstype,
		Physical: sysroot.PhysicalRootDir, Image: sysroot.ImageMountDir,
		SysrootBind: bound(sysrootSeen),
	}, img, dep))
	log.Printf("%s", recordSummary(rec))

	// No way back after this: a failure reboots.
	f.shell = ""
	return switchRoot(newrootDir, plan.Init, os.Args[1:], os.Environ(), log)
}

// moveIntoNewRoot moves /run (and with it the physical root and the
// image's layer) and the kernel's file systems into newroot, and binds
// the physical root on newroot's /sysroot when the image has one. It
// returns where /run now is and where the booted system sees the
// physical root.
func moveIntoNewRoot(newroot string, log *Log) (run, sysrootSeen string, err error) {
	run = filepath.Join(newroot, runDir)
	if !isRealDir(run) {
		return "", "", fmt.Errorf("the image has no /run to carry the physical root (%s) and the image's layer into the booted system", sysroot.PhysicalRootDir)
	}
	if err := moveMount(runDir, run); err != nil {
		return "", "", err
	}
	sysrootSeen = sysroot.PhysicalRootDir
	if d := filepath.Join(newroot, sysrootDir); isRealDir(d) {
		if err := unix.Mount(filepath.Join(newroot, sysroot.PhysicalRootDir), d, "", unix.MS_BIND, ""); err != nil {
			return "", "", fmt.Errorf("bind-mount the physical root on %s: %w", sysrootDir, err)
		}
		sysrootSeen = sysrootDir
	}
	for _, m := range []string{"/dev", "/proc", "/sys"} {
		if d := filepath.Join(newroot, m); isRealDir(d) {
			if err := moveMount(m, d); err != nil {
				return "", "", err
			}
		} else {
			log.Printf("warning: the image has no %s; unmounting it", m)
			unix.Unmount(m, unix.MNT_DETACH)
		}
	}
	return run, sysrootSeen, nil
}

// bound returns the /sysroot bind for rootMounts: seen when the physical
// root was bound there, "" when it is only at sysroot.PhysicalRootDir.
func bound(seen string) string {
	if seen == sysrootDir {
		return seen
	}
	return ""
}

// writeRecords leaves the boot record and the mount units in run. Neither
// stops the boot: the system runs without them, with less information.
func writeRecords(log *Log, run string, rec *BootRecord, units []mountUnit) {
	if err := writeBootRecord(run, rec); err != nil {
		log.Printf("warning: cannot write the boot record: %v", err)
	}
	if err := writeUnits(run, units); err != nil {
		log.Printf("warning: cannot write the mount units for systemd: %v", err)
	}
}
