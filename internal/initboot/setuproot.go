package initboot

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/mountinfo"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"

	"golang.org/x/sys/unix"
)

const setupRootUsage = `Usage: cfs-init setup-root [--sysroot DIR] [--debug]

Run inside a systemd (dracut) initramfs after the physical root file system
is mounted on /sysroot: verify the composefs image that composefs= on the
kernel command line names, and rebuild /sysroot as that image's tree with the
deployment's /etc and /var and the physical root at /sysroot/sysroot.
systemd then switches root into it.

Options:
`

// RunSetupRoot is `cfs-init setup-root`. It returns the exit status: 0 when
// /sysroot is the verified composefs root, 1 on failure (after printing
// why), 2 for a bad command line.
func RunSetupRoot(args []string, stderr io.Writer) (status int) {
	fs := flag.NewFlagSet("cfs-init setup-root", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, setupRootUsage)
		fs.PrintDefaults()
	}
	sysroot := fs.String("sysroot", "/sysroot", "where the physical root file system is mounted")
	cmdline := fs.String("cmdline", "", "use this kernel command line instead of /proc/cmdline (for tests)")
	run := fs.String("run", runDir, "the runtime directory for the boot record and scratch mounts (for tests)")
	debug := fs.Bool("debug", false, "print every step (also cfs.debug on the kernel command line)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cfs-init setup-root: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	log := NewLog(stderr, nil, *debug)
	defer func() {
		if r := recover(); r != nil {
			log.Printf("%s", FailureText(panicError(r), nil))
			status = 1
		}
	}()
	if err := setupRoot(log, *sysroot, *cmdline, *run, *debug); err != nil {
		log.Printf("%s", FailureText(err, nil))
		return 1
	}
	return 0
}

func setupRoot(log *Log, sysrootPath, cmdline, run string, debug bool) (err error) {
	if cmdline == "" {
		b, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			return during("read the kernel command line", err)
		}
		cmdline = string(b)
	}
	plan, err := NewPlan(strings.TrimSpace(cmdline))
	if err != nil {
		return during("use the kernel command line", err)
	}
	log.SetDebug(debug || plan.Debug)
	if sysrootPath, err = filepath.Abs(sysrootPath); err != nil {
		return err
	}
	if !isDir(sysrootPath) {
		return fmt.Errorf("%s is not a directory; the physical root should be mounted there", sysrootPath)
	}
	device, fstype := mountSource("/proc/self/mountinfo", sysrootPath)
	var sfs unix.Statfs_t
	ro := unix.Statfs(sysrootPath, &sfs) == nil && sfs.Flags&unix.ST_RDONLY != 0
	if ro {
		// The binds of /etc and /var inherit the read-only flag, and a
		// later remount of the physical root does not lift it from them.
		log.Printf("warning: %s is mounted read-only (ro on the kernel command line?); /etc and /var will be read-only: composefs deployments need rw", sysrootPath)
	}

	// The physical root is bound under run first and the image's layer
	// mounted there too: run moves into the booted system whole at
	// switch-root, so the root's overlay options name paths that exist
	// there. Private, so that the mounts made from it do not propagate
	// back into /sysroot, which the new tree then covers.
	phys, layer := underRun(run, sysroot.PhysicalRootDir), underRun(run, sysroot.ImageMountDir)
	if err := os.MkdirAll(phys, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(sysrootPath, phys, "", unix.MS_BIND, ""); err != nil {
		return during("bind-mount the physical root on "+phys, err)
	}
	defer func() {
		if err != nil {
			unix.Unmount(layer, unix.MNT_DETACH)
			unix.Unmount(phys, unix.MNT_DETACH)
		}
	}()
	if err := unix.Mount("", phys, "", unix.MS_PRIVATE, ""); err != nil {
		return during("make "+phys+" private", err)
	}

	// The new tree is built on a private scratch mount: systemd makes
	// every mount shared, and the kernel refuses to move a mount whose
	// parent is shared.
	staging := filepath.Join(run, "cfs-deploy", "staging")
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", staging, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return during("mount a scratch tmpfs on "+staging, err)
	}
	defer func() {
		// Detaches whatever is still below it after a failure.
		unix.Unmount(staging, unix.MNT_DETACH)
		os.Remove(staging)
	}()
	if err := unix.Mount("", staging, "", unix.MS_PRIVATE, ""); err != nil {
		return during("make "+staging+" private", err)
	}
	newroot := filepath.Join(staging, "root")
	img, dep, err := assembleRoot(log, plan, phys, layer, newroot)
	if err != nil {
		return err
	}

	t := log.Begin("move-root")
	seen := underRun(run, sysroot.PhysicalRootDir)
	if d := filepath.Join(newroot, sysrootDir); isRealDir(d) {
		if err := unix.Mount(phys, d, "", unix.MS_BIND, ""); err != nil {
			return during("bind-mount the physical root on "+d, err)
		}
		seen = sysrootDir
	}
	if err := unix.Mount("", newroot, "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return during("make the new root private", err)
	}
	if err := moveMount(newroot, sysrootPath); err != nil {
		return during("put the composefs root on "+sysrootPath, err)
	}
	t.End("moved the composefs root onto %s; the physical root is at %s", sysrootPath, seen)

	rec := &BootRecord{Mode: "setup-root", Device: device, FSType: fstype, ReadOnly: ro}
	fillRecord(rec, img, dep, seen)
	rec.Timings = log.timing()
	writeRecords(log, run, rec, bootUnits(rootMounts{
		Device: device, FSType: fstype, Physical: phys, Image: layer, SysrootBind: bound(seen),
	}, img, dep))
	log.Printf("%s", recordSummary(rec))
	return nil
}

// underRun is p, a path under /run, under run instead (the same path
// unless a test moved the runtime directory).
func underRun(run, p string) string {
	return filepath.Join(run, strings.TrimPrefix(p, runDir+"/"))
}

// mountSource returns the source and type of the topmost mount on target,
// from a mountinfo file; empty when it cannot tell.
func mountSource(path, target string) (source, fstype string) {
	mounts, _ := mountinfo.Read(path)
	for _, m := range mounts {
		if m.MountPoint == target {
			source, fstype = m.Source, m.FSType
		}
	}
	return source, fstype
}
