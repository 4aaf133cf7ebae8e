package vm_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
	"github.com/cfs-deploy/cfs-deploy/tests/vm/vmtest"
)

// This file prepares what the deployment boot tests share: the binaries,
// a small test OS tree, and disks on which an installer boot created a
// repository, committed the tree and rolled it out. deploy_boot_test.go
// holds the scenarios.

const (
	testInitPkg  = "./tests/vm/testdata/testinit"
	installerPkg = "./tests/vm/testdata/installer"

	// Under TCG on a loaded machine a boot takes 10-30 s; the installer
	// also hashes the whole tree and builds an initramfs.
	bootTimeout      = 3 * time.Minute
	installerTimeout = 6 * time.Minute

	diskSize = "192M"
	branch   = "os"

	// Where the installer mounts the disks, and the repository on the
	// target disk.
	sysroot  = "/sysroot"
	repoPath = sysroot + "/composefs"
	bootDir  = sysroot + "/boot"
	srcDir   = "/src"
)

// osModules are the modules the test OS ships: what cfs-init needs to reach
// and mount its root on a virtio disk (see initramfs.DefaultModules) and
// nothing more, since each costs boot time under TCG. ModuleFiles adds
// their dependencies (jbd2, mbcache, crc16, libcrc32c).
var osModules = []string{"crc32c_generic", "sha256-ssse3", "virtio_blk", "ext4", "erofs", "overlay", "loop", "vfat", "nls_cp437", "nls_ascii"}

// espModules are what the running test OS needs to mount an ESP (FAT):
// rollouts that need it add them to the initramfs with --module, since
// once the root is switched nothing can load the modules of the tree
// (busybox insmod cannot read .ko.xz).
var espModules = []string{"--module", "vfat", "--module", "nls_cp437", "--module", "nls_ascii"}

// installerModules are what the installer needs to write the disk.
var installerModules = []string{"virtio_blk", "crc32c_generic", "sha256-ssse3", "ext4"}

// testFile is a file of the test OS whose content the booted system must
// serve unchanged.
type testFile struct {
	size int
	sum  [32]byte
	data []byte
}

// fixture is shared by the subtests of TestDeployBoot. Its parts are made
// when a subtest first needs them, so a -run that selects one scenario
// pays only for that.
type fixture struct {
	start time.Time
	dir   string // lives as long as TestDeployBoot
	k     *vmtest.KernelTree

	deployBin, initBin, testInitBin, installerBin string

	tree    string // the test OS tree on the host
	srcDisk string // the tree as an ext4 image, the installer's /dev/vdb
	files   map[string]testFile

	installs map[string]*install // by disk kind
	stats    []bootStat
}

// install is a disk after the installer's boot. Scenarios boot copies.
type install struct {
	kind     string // "verity" or "insecure"
	disk     string
	commit   string
	image    string // the image's fs-verity digest, hex
	entry    *vmtest.BootEntry
	duration time.Duration
	err      error // a failed install fails every scenario that needs it
}

// bootStat is what one boot measured.
type bootStat struct {
	name        string
	host        time.Duration // QEMU start to exit
	initUptime  string        // guest uptime when the test OS's init started
	refusedAt   string        // guest uptime when cfs-init refused to boot
	record      *bootRecord   // cfs-init's booted.json, if the boot got that far
	initramfsSz int64
}

// bootRecord is the part of cfs-init's /run/cfs-deploy/booted.json the
// tests read.
type bootRecord struct {
	Digest       string `json:"digest"`
	Arg          string `json:"arg"`
	Insecure     bool   `json:"insecure"`
	KernelVerity bool   `json:"kernel_verity"`
	Device       string `json:"device"`
	Etc          string `json:"etc"`
	Var          string `json:"var"`
	Timings      struct {
		InitStart   float64 `json:"init_start_ms"`
		SinceKernel float64 `json:"total_since_kernel_ms"`
		SinceInit   float64 `json:"total_since_init_ms"`
		Own         float64 `json:"own_ms"`
		Steps       []struct {
			Name string  `json:"name"`
			MS   float64 `json:"ms"`
		} `json:"steps"`
	} `json:"timings"`
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{start: time.Now(), dir: t.TempDir(), installs: map[string]*install{}}
	f.k = vmtest.Kernel(t)
	f.deployBin = gobuild.T(t, "./cmd/cfs-deploy")
	f.initBin = gobuild.T(t, "./cmd/cfs-init")
	f.testInitBin = gobuild.T(t, testInitPkg)
	f.installerBin = gobuild.T(t, installerPkg)
	for _, tool := range []string{"mkfs.ext4", "debugfs", "depmod", "cp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (e2fsprogs, kmod, coreutils)", tool)
		}
	}
	if err := f.makeTree(); err != nil {
		t.Fatal(err)
	}
	f.srcDisk = vmtest.MakeExt4FromDir(t, "64M", f.tree, false)
	return f
}

// makeTree writes the test OS: the kernel and a few of its modules, a
// static busybox, the test init as /sbin/init, /etc and /var content, and
// data files of several sizes (up to 64 bytes a file is inline in the
// image; larger ones are objects).
func (f *fixture) makeTree() error {
	f.tree = filepath.Join(f.dir, "tree")
	kdir := filepath.Join(f.tree, "usr/lib/modules", f.k.Version)
	f.files = map[string]testFile{}
	write := func(p string, data []byte, perm os.FileMode) error {
		full := filepath.Join(f.tree, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, data, perm); err != nil {
			return err
		}
		if !strings.HasPrefix(p, "usr/lib/modules/") {
			f.files["/"+p] = testFile{size: len(data), sum: sha256.Sum256(data), data: data}
		}
		return nil
	}
	copyFile := func(dst, src string, perm os.FileMode) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return write(dst, b, perm)
	}

	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "sysroot", "mnt", "usr/bin", "usr/sbin", "var/log", "root"} {
		if err := os.MkdirAll(filepath.Join(f.tree, d), 0o755); err != nil {
			return err
		}
	}
	// Merged /usr, as Debian has it: /lib -> usr/lib (depmod -b finds the
	// modules through it).
	if err := os.Symlink("usr/lib", filepath.Join(f.tree, "lib")); err != nil {
		return err
	}
	if err := copyFile("usr/lib/modules/"+f.k.Version+"/vmlinuz", f.k.Vmlinuz, 0o644); err != nil {
		return err
	}
	mods, err := f.k.ModuleFiles(osModules...)
	if err != nil {
		return err
	}
	for _, m := range append(mods, "modules.builtin", "modules.builtin.modinfo", "modules.order") {
		if err := copyFile("usr/lib/modules/"+f.k.Version+"/"+m, filepath.Join(f.k.ModulesDir, m), 0o644); err != nil {
			return err
		}
	}
	if out, err := exec.Command("depmod", "-b", f.tree, f.k.Version).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod -b %s: %v: %s", f.tree, err, out)
	}
	if _, err := os.Stat(filepath.Join(kdir, "modules.dep")); err != nil {
		return fmt.Errorf("depmod left no modules.dep: %w", err)
	}

	if err := copyFile("bin/busybox", "/bin/busybox", 0o755); err != nil {
		return err
	}
	for _, applet := range []string{"sh", "cat", "ls", "mount", "umount", "sync", "poweroff", "reboot", "dmesg", "sha256sum",
		"echo", "rm", "mkdir", "cp", "tr", "grep", "sed", "head", "stat", "chmod"} {
		if err := os.Symlink("busybox", filepath.Join(f.tree, "bin", applet)); err != nil {
			return err
		}
	}
	if err := copyFile("sbin/init", f.testInitBin, 0o755); err != nil {
		return err
	}
	// The OS updates itself: cfs-deploy, and cfs-init where rollout looks
	// for it to build initramfs images.
	if err := copyFile("usr/bin/cfs-deploy", f.deployBin, 0o755); err != nil {
		return err
	}
	if err := copyFile("usr/lib/cfs-deploy/cfs-init", f.initBin, 0o755); err != nil {
		return err
	}

	files := map[string][]byte{
		"etc/hostname":              []byte("cfstest\n"),
		"etc/os-release":            []byte("NAME=\"cfs-deploy test OS\"\nID=cfstest\nVERSION_ID=1\nPRETTY_NAME=\"cfs-deploy VM test OS 1\"\n"),
		"etc/cfstest/config":        []byte("# written by the boot tests; the deployment's /etc starts as a copy of this\nsetting=1\n"),
		"etc/cfstest/untouched":     []byte("default of version 1\n"),
		"etc/cfstest/to-delete":     []byte("the admin deletes this file\n"),
		"var/lib/cfstest/seed.txt":  []byte("seeded from the image's /var on the first rollout of this stateroot\n"),
		"usr/share/test/tiny.txt":   []byte("tiny file, inline in the image\n"),
		"usr/share/test/65.txt":     bytes.Repeat([]byte("6"), 64+1),
		"usr/share/test/medium.txt": bytes.Repeat([]byte("composefs objects are named by their fs-verity digest.\n"), 91), // 5005 bytes
		"usr/share/test/dup.txt":    bytes.Repeat([]byte("composefs objects are named by their fs-verity digest.\n"), 91), // the same object
		"usr/share/test/big.bin":    pseudoRandom(300 << 10),
	}
	for p, data := range files {
		if err := write(p, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// pseudoRandom returns n bytes that compress badly, the same every run.
func pseudoRandom(n int) []byte {
	out := make([]byte, 0, n+32)
	seed := sha256.Sum256([]byte("cfs-deploy vm test"))
	for len(out) < n {
		seed = sha256.Sum256(seed[:])
		out = append(out, seed[:]...)
	}
	return out[:n]
}

// objectPath is where the repository keeps the object with digest d.
func objectPath(d string) string {
	return "/composefs/objects/" + d[:2] + "/" + d[2:]
}

// fileObject is the object holding the test OS file p.
func (f *fixture) fileObject(t *testing.T, p string) string {
	tf, ok := f.files[p]
	if !ok {
		t.Fatalf("no test file %s", p)
	}
	return objectPath(verity.DigestBytes(tf.data).String())
}

// installerStep is one step of the installer's /installer.json.
type installerStep struct {
	Run    []string  `json:"run,omitempty"`
	Verity string    `json:"verity,omitempty"`
	Flip   *flipStep `json:"flip,omitempty"`
}

// flipStep XORs one byte of a file with Mask (0 means 0xff).
type flipStep struct {
	Path   string `json:"path"`
	Offset int64  `json:"offset"`
	Mask   byte   `json:"mask"`
}

func cmdStep(argv ...string) installerStep { return installerStep{Run: argv} }

func deployStep(args ...string) installerStep {
	return cmdStep(append([]string{"/bin/cfs-deploy", "--repo", repoPath}, args...)...)
}

// runInstaller boots the installer with disks attached (the first is
// mounted read-write on /sysroot, a second read-only on /src) and runs
// steps. It returns the console once the installer powered off after
// INSTALLER-OK.
func (f *fixture) runInstaller(t *testing.T, name string, disks []string, steps []installerStep) (*vmtest.VM, error) {
	r := vmtest.NewInitrd()
	if err := r.CopyFile("/init", f.installerBin, 0o755); err != nil {
		return nil, err
	}
	mods, err := r.Modules(f.k, installerModules...)
	if err != nil {
		return nil, err
	}
	for _, b := range []struct{ dst, src string }{
		{"/bin/cfs-deploy", f.deployBin},
		{"/bin/cfs-init", f.initBin},
		{"/usr/lib/cfs-deploy/cfs-init", f.initBin},
		{"/bin/busybox", "/bin/busybox"},
	} {
		if err := r.CopyFile(b.dst, b.src, 0o755); err != nil {
			return nil, err
		}
	}
	for _, applet := range []string{"sh", "cp", "mv", "rm", "ls", "cat", "find", "sync", "du"} {
		r.Symlink("/bin/"+applet, "busybox")
	}
	type mount struct {
		Device   string `json:"device"`
		Dir      string `json:"dir"`
		FSType   string `json:"fstype"`
		ReadOnly bool   `json:"read_only"`
	}
	mounts := []mount{{"/dev/vda", sysroot, "ext4", false}}
	if len(disks) > 1 {
		mounts = append(mounts, mount{"/dev/vdb", srcDir, "ext4", true})
	}
	plan, err := json.MarshalIndent(map[string]any{"modules": mods, "mounts": mounts, "steps": steps}, "", "  ")
	if err != nil {
		return nil, err
	}
	r.File("/installer.json", 0o644, plan)

	vm := vmtest.Boot(t, vmtest.Config{
		Kernel:   f.k.Vmlinuz,
		Initrd:   r.WriteFile(t),
		Disks:    disks,
		Append:   "loglevel=4",
		MemoryMB: 1024,
		Timeout:  installerTimeout,
	})
	line, err := vm.WaitFor("INSTALLER-")
	code, werr := vm.Wait()
	f.stats = append(f.stats, bootStat{name: strings.TrimPrefix(name, "TestDeployBoot/"), host: time.Since(vm.Started())})
	switch {
	case err != nil:
		return vm, err
	case werr != nil:
		return vm, werr
	case !strings.Contains(line, "INSTALLER-OK"):
		return vm, fmt.Errorf("installer: %s", line)
	case code != 0 || !vm.PoweredOff():
		return vm, fmt.Errorf("installer: QEMU exit status %d, powered off %v", code, vm.PoweredOff())
	}
	return vm, nil
}

var (
	commitLine = regexp.MustCompile(`installer\| commit ([0-9a-f]{64})`)
	imageLine  = regexp.MustCompile(`installer\| image\s+([0-9a-f]{64})`)
)

// installed returns the disk of the given kind ("verity": ext4 with the
// verity feature and a secure repository; "insecure": without, and
// init --insecure), installing it on first use.
func (f *fixture) installed(t *testing.T, kind string) *install {
	t.Helper()
	in := f.installs[kind]
	if in == nil {
		in = f.install(t, kind)
		f.installs[kind] = in
	}
	if in.err != nil {
		t.Fatalf("installing the %s disk failed earlier: %v", kind, in.err)
	}
	return in
}

func (f *fixture) install(t *testing.T, kind string) *install {
	in := &install{kind: kind}
	start := time.Now()
	defer func() { in.duration = time.Since(start) }()
	// The installer's boot belongs to the test that first needs the
	// disk; its console is logged there if it fails.
	img := vmtest.MakeExt4(t, diskSize, map[string]string{}, kind == "verity")
	in.disk = filepath.Join(f.dir, kind+".img")
	if err := vmtest.CopySparse(img, in.disk); err != nil {
		in.err = err
		return in
	}
	initArgs := []string{"init"}
	rollout := rolloutArgs()
	if kind == "insecure" {
		initArgs = append(initArgs, "--insecure")
		rollout = append(rollout[:1], append([]string{"--insecure"}, rollout[1:]...)...)
	}
	steps := []installerStep{
		deployStep(initArgs...),
		deployStep("commit", "--branch", branch, "--subject", "cfs-deploy VM test OS", srcDir),
		deployStep(rollout...),
		deployStep("fsck", "--quick"),
		cmdStep("/bin/ls", "-lR", bootDir),
	}
	vm, err := f.runInstaller(t, "install "+kind, []string{in.disk, f.srcDisk}, steps)
	if err != nil {
		in.err = err
		if vm != nil {
			t.Logf("installer console:\n%s", vm.Output())
		}
		return in
	}
	out := vm.Output()
	if m := commitLine.FindStringSubmatch(out); m != nil {
		in.commit = m[1]
	}
	if m := imageLine.FindStringSubmatch(out); m != nil {
		in.image = m[1]
	}
	if in.commit == "" || in.image == "" {
		in.err = fmt.Errorf("the installer's console shows no commit id or image digest")
		t.Logf("installer console:\n%s", out)
		return in
	}
	entryDir := filepath.Join(f.dir, kind+"-entry")
	if err := os.MkdirAll(entryDir, 0o755); err != nil {
		in.err = err
		return in
	}
	if in.entry, err = vmtest.ReadBootEntry(in.disk, "/boot", entryDir); err != nil {
		in.err = fmt.Errorf("reading the boot entry as a boot loader would: %w", err)
		return in
	}
	t.Logf("%s disk installed in %v: commit %s, image %s; default entry %s (loader.conf default %q): linux %s, initrd %v (%d bytes), options %q",
		kind, time.Since(start).Round(time.Millisecond), in.commit, in.image, in.entry.File, in.entry.Default,
		in.entry.Linux, in.entry.Initrd, in.entry.InitrdSize, in.entry.Options)
	return in
}

// rolloutArgs makes the branch bootable on the installer's /sysroot. The
// root device is left to rollout, which names the file system by UUID. The
// initramfs carries the FAT modules, for the scenarios that mount an ESP.
func rolloutArgs() []string {
	return append(append([]string{"rollout", "--sysroot", sysroot, "--boot", bootDir}, espModules...), branch)
}

// diskCopy returns a private copy of an installed disk for one scenario.
func (f *fixture) diskCopy(t *testing.T, in *install) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := vmtest.CopySparse(in.disk, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// boot boots disk the way the boot loader would boot the installed entry:
// its kernel, initramfs and options, plus the console, quiet kernel
// messages, cfs-init's debug lines and an immediate reboot on failure, and
// the test init's knobs.
func (f *fixture) boot(t *testing.T, disk string, in *install, options string, knobs ...string) *vmtest.VM {
	t.Helper()
	if options == "" {
		options = in.entry.Options
	}
	appendArgs := strings.Join(append([]string{options, "loglevel=4 cfs.debug cfs.reboot-delay=0"}, knobs...), " ")
	return vmtest.Boot(t, vmtest.Config{
		Kernel:  in.entry.Kernel,
		Initrd:  in.entry.InitrdFile,
		Disks:   []string{disk},
		Append:  appendArgs,
		Timeout: bootTimeout,
	})
}

// finish waits for QEMU to exit and records the boot's numbers from its
// console.
func (f *fixture) finish(t *testing.T, vm *vmtest.VM, in *install) (code int) {
	t.Helper()
	code, err := vm.Wait()
	if err != nil {
		t.Fatal(err)
	}
	st := bootStat{name: strings.TrimPrefix(t.Name(), "TestDeployBoot/"), host: time.Since(vm.Started()), initramfsSz: in.entry.InitrdSize}
	for _, l := range strings.Split(vm.Output(), "\n") {
		if m := refusedLine.FindStringSubmatch(l); m != nil {
			st.refusedAt = m[1]
		}
		if _, rest, ok := strings.Cut(l, "CFSTEST-INIT uptime="); ok {
			st.initUptime, _, _ = strings.Cut(rest, " ")
		}
		if _, js, ok := strings.Cut(l, "cfstest: booted.json "); ok {
			var r bootRecord
			if json.Unmarshal([]byte(strings.TrimSpace(js)), &r) == nil {
				st.record = &r
			}
		}
	}
	f.stats = append(f.stats, st)
	return code
}

// refusedLine is cfs-init's failure line, stamped with the kernel's uptime.
var refusedLine = regexp.MustCompile(`\[\s*(\d+\.\d+)\] cfs-init: refusing to boot`)

// bootRecordOf returns the boot record the test init printed on the
// console out.
func bootRecordOf(t *testing.T, out string) *bootRecord {
	t.Helper()
	js := strings.TrimPrefix(consoleLine(out, "cfstest: booted.json "), "cfstest: booted.json ")
	var r bootRecord
	if err := json.Unmarshal([]byte(strings.TrimSpace(js)), &r); err != nil {
		t.Fatalf("booted.json as the test init printed it: %v\n%q", err, js)
	}
	return &r
}

// replaceArg returns the command line options with every key=... argument
// replaced by arg ("" removes it).
func replaceArg(options, key, arg string) string {
	var out []string
	replaced := false
	for _, a := range strings.Fields(options) {
		if k, _, _ := strings.Cut(a, "="); k == key {
			if !replaced && arg != "" {
				out = append(out, arg)
			}
			replaced = true
			continue
		}
		out = append(out, a)
	}
	if !replaced && arg != "" {
		out = append(out, arg)
	}
	return strings.Join(out, " ")
}

// argValue returns the value of the first key=value argument.
func argValue(options, key string) string {
	for _, a := range strings.Fields(options) {
		if k, v, ok := strings.Cut(a, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// logStats prints what the boots measured.
func (f *fixture) logStats(t *testing.T) {
	var b strings.Builder
	row := "%-46s %7s %13s %9s %15s %8s\n"
	fmt.Fprintf(&b, row, "boot", "host", "init@uptime", "cfs-init@", "cfs-init", "own")
	for _, s := range f.stats {
		init, start, total, own := "-", "-", "-", "-"
		if s.initUptime != "" {
			init = s.initUptime + " s"
		} else if s.refusedAt != "" {
			init = "refused " + s.refusedAt[:len(s.refusedAt)-4] + " s"
		}
		if r := s.record; r != nil {
			start = fmt.Sprintf("%.0f ms", r.Timings.InitStart)
			total = fmt.Sprintf("%.0f ms", r.Timings.SinceInit)
			if up, err := strconv.ParseFloat(s.initUptime, 64); err == nil && up > 0 {
				total += fmt.Sprintf(" (%.0f%%)", r.Timings.SinceInit/(up*10))
			}
			own = fmt.Sprintf("%.0f ms", r.Timings.Own)
		}
		fmt.Fprintf(&b, row, s.name, s.host.Round(100*time.Millisecond), init, start, total, own)
	}
	t.Logf("boots (host: QEMU start to exit; init@uptime: guest uptime when the test OS's init started, or when cfs-init refused; cfs-init@: uptime when cfs-init started; cfs-init: its time to switch root (share of the time to init); own: that minus module loading and waiting for the disk):\n%s", b.String())
	for _, s := range f.stats {
		if r := s.record; r != nil {
			var steps []string
			for _, st := range r.Timings.Steps {
				steps = append(steps, fmt.Sprintf("%s %.1f", st.Name, st.MS))
			}
			t.Logf("cfs-init steps in %s (ms): %s", s.name, strings.Join(steps, ", "))
			break
		}
	}
	for kind, in := range f.installs {
		if in.entry != nil {
			t.Logf("%s disk: initramfs %d bytes (%s), install %v", kind, in.entry.InitrdSize, strings.Join(in.entry.Initrd, " "), in.duration.Round(time.Millisecond))
		}
	}
	t.Logf("suite wall time %v", time.Since(f.start).Round(time.Millisecond))
}
