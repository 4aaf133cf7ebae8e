package vm_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"github.com/cfs-deploy/cfs-deploy/tests/vm/vmtest"
)

// TestDeployBoot installs the test OS with cfs-deploy (init, commit,
// rollout) from inside a VM, so that the repository carries fs-verity, then
// boots the installed entry the way a boot loader would and checks what
// cfs-init does with an intact disk, a tampered one and a broken entry.
// Every scenario boots its own copy of the installed disk.
func TestDeployBoot(t *testing.T) {
	t.Parallel() // beside TestDebianBoot
	f := newFixture(t)
	defer f.logStats(t)

	t.Run("verified", f.testVerified)
	t.Run("tampered-object", f.testTamperedObject)
	t.Run("tampered-image", f.testTamperedImage)
	t.Run("insecure", f.testInsecure)
	t.Run("failures", f.testFailures)
	t.Run("lifecycle", f.testLifecycle)
	t.Run("dracut", f.testDracut)
	t.Run("uefi-fallback", f.testUEFIFallback)
	t.Run("staged", f.testStaged)
	t.Run("pull", f.testPull)
}

// checkedFiles are the test OS files whose content a boot compares.
func (f *fixture) checkedFiles() []string {
	var ps []string
	for p := range f.files {
		if strings.HasPrefix(p, "/usr/share/test/") || p == "/etc/hostname" || p == "/var/lib/cfstest/seed.txt" {
			ps = append(ps, p)
		}
	}
	sort.Strings(ps)
	return ps
}

// waitDone waits for the test init's end and for QEMU to exit after a
// clean power-off; it returns the console.
func (f *fixture) waitDone(t *testing.T, vm *vmtest.VM, in *install) string {
	t.Helper()
	_, err := vm.WaitFor("CFSTEST-DONE")
	code := f.finish(t, vm, in)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || !vm.PoweredOff() {
		t.Fatalf("QEMU exit status %d, powered off %v; want 0 after the test init's power-off", code, vm.PoweredOff())
	}
	return vm.Output()
}

// consoleLine returns the first console line that starts (after any
// firmware noise) with prefix, or "".
func consoleLine(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, prefix); i >= 0 {
			return strings.TrimRight(l[i:], "\r")
		}
	}
	return ""
}

// mountLine returns the /proc/mounts line the test init printed for
// mountpoint, split into fields.
func mountLine(out, mountpoint string) []string {
	for _, l := range strings.Split(out, "\n") {
		_, m, ok := strings.Cut(l, "cfstest: mount ")
		if !ok {
			continue
		}
		if f := strings.Fields(m); len(f) >= 4 && f[1] == mountpoint {
			return f
		}
	}
	return nil
}

func hasOption(opts, want string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// checkReads compares "cfstest: read" lines with the committed tree.
func (f *fixture) checkReads(t *testing.T, out string, paths []string) {
	t.Helper()
	for _, p := range paths {
		tf := f.files[p]
		want := fmt.Sprintf("cfstest: read %s: %d bytes sha256:%x", p, tf.size, tf.sum)
		if got := consoleLine(out, "cfstest: read "+p+":"); got != want {
			t.Errorf("reading %s in the booted system:\n got %q\nwant %q", p, got, want)
		}
	}
}

// expectRefused checks that cfs-init stopped the boot with a message
// holding every one of wants, that the test OS's init never ran, and that
// the VM ended by cfs-init's reboot rather than a hang or a panic. It
// returns cfs-init's message.
func (f *fixture) expectRefused(t *testing.T, vm *vmtest.VM, in *install, wants ...string) string {
	t.Helper()
	line, err := vm.WaitFor("refusing to boot")
	code := f.finish(t, vm, in)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cfs-init: %s", line[strings.Index(line, "refusing"):])
	for _, w := range wants {
		if !strings.Contains(line, w) {
			t.Errorf("cfs-init's message does not say %q", w)
		}
	}
	out := vm.Output()
	if strings.Contains(out, "CFSTEST-INIT") {
		t.Error("the test OS's init ran although cfs-init refused to boot")
	}
	if code != 0 || !vm.Rebooted() || vm.Panicked() {
		t.Errorf("QEMU exit status %d, rebooted %v, panicked %v; want cfs-init's reboot (status 0)", code, vm.Rebooted(), vm.Panicked())
	}
	return line
}

func (f *fixture) testVerified(t *testing.T) {
	in := f.installed(t, "verity")
	opts := in.entry.Options
	if got := argValue(opts, "composefs"); got != in.image {
		t.Errorf("entry options %q: composefs=%s, want the committed image %s", opts, got, in.image)
	}
	if argValue(opts, "root") == "" {
		t.Errorf("entry options %q name no root device", opts)
	}
	if a, b := fileSum(t, in.entry.Kernel), fileSum(t, f.k.Vmlinuz); a != b {
		t.Errorf("the entry's kernel is not the test OS's /usr/lib/modules/%s/vmlinuz", f.k.Version)
	}
	disk := f.diskCopy(t, in)
	reads := f.checkedFiles()
	token := "boot1-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	persistent := []string{"/etc/cfstest-note", "/var/cfstest-note"}
	readOnly := []string{"/usr/share/test/new-file", "/cfstest-rootfile"}

	ok := t.Run("first-boot", func(t *testing.T) {
		vm := f.boot(t, disk, in, "",
			"cfstest.read="+strings.Join(reads, ","),
			"cfstest.token="+token,
			"cfstest.write="+strings.Join(append(append([]string{}, persistent...), readOnly...), ","))
		out := f.waitDone(t, vm, in)

		root := mountLine(out, "/")
		if root == nil || root[2] != "overlay" || !hasOption(root[3], "ro") || !hasOption(root[3], "verity=require") {
			t.Errorf("/ should be the composefs overlay, read-only, with verity=require; /proc/mounts has %q", root)
		}
		// The root's layers are named by paths that exist on the booted
		// system: cfs-init keeps them mounted under /run/cfs-deploy.
		if root != nil {
			for _, want := range []string{"lowerdir+=/run/cfs-deploy/image", "datadir+=/run/cfs-deploy/sysroot/composefs/objects"} {
				if !hasOption(root[3], want) {
					t.Errorf("the root overlay's options %q lack %q", root[3], want)
				}
			}
		}
		if l := mountLine(out, "/run/cfs-deploy/image"); l == nil || l[2] != "erofs" {
			t.Errorf("the image's EROFS layer is not mounted at /run/cfs-deploy/image; /proc/mounts has %q", l)
		}
		if l := mountLine(out, "/run/cfs-deploy/sysroot"); l == nil || l[2] != "ext4" {
			t.Errorf("the physical root is not mounted at /run/cfs-deploy/sysroot; /proc/mounts has %q", l)
		}
		if consoleLine(out, "cfstest: root-statfs") != "cfstest: root-statfs ro=true" {
			t.Errorf("statfs(/) does not report a read-only mount: %q", consoleLine(out, "cfstest: root-statfs"))
		}
		for _, m := range []string{"/etc", "/var"} {
			if l := mountLine(out, m); l == nil || l[2] != "ext4" || !hasOption(l[3], "rw") {
				t.Errorf("%s should be a writable mount of the deployment's state on the root disk; /proc/mounts has %q", m, l)
			}
		}
		f.checkReads(t, out, reads)
		for _, p := range persistent {
			if got := consoleLine(out, "cfstest: write "+p+":"); got != "cfstest: write "+p+": ok" {
				t.Errorf("writing %s: %q", p, got)
			}
		}
		for _, p := range readOnly {
			if got := consoleLine(out, "cfstest: write "+p+":"); !strings.HasSuffix(got, "error: read-only file system") {
				t.Errorf("writing %s on the image should fail with EROFS: %q", p, got)
			}
		}
		r := bootRecordOf(t, vm.Output())
		if r.Digest != in.image || r.Insecure || !r.KernelVerity {
			t.Errorf("booted.json: digest %s insecure %v kernel_verity %v; want %s, false, true", r.Digest, r.Insecure, r.KernelVerity, in.image)
		}
		if strings.Contains(out, "INSECURE") {
			t.Error("a verified boot printed an INSECURE warning")
		}
	})
	if !ok {
		return
	}

	t.Run("second-boot", func(t *testing.T) {
		vm := f.boot(t, disk, in, "", "cfstest.show="+strings.Join(append([]string{"/etc/hostname"}, persistent...), ","))
		out := f.waitDone(t, vm, in)
		for _, p := range persistent {
			want := fmt.Sprintf("cfstest: show %s: %q", p, token+"\n")
			if got := consoleLine(out, "cfstest: show "+p+":"); got != want {
				t.Errorf("after a reboot:\n got %q\nwant %q", got, want)
			}
		}
		if got, want := consoleLine(out, "cfstest: show /etc/hostname:"), fmt.Sprintf("cfstest: show /etc/hostname: %q", "cfstest\n"); got != want {
			t.Errorf("the deployment's /etc lost the image's file:\n got %q\nwant %q", got, want)
		}
	})

	// Offline, the writes are where the layout says a deployment's /etc
	// and its OS's /var live.
	for p, where := range map[string]string{
		"/state/deploy/" + in.image + "/etc/cfstest-note": "/etc",
		"/state/os/default/var/cfstest-note":              "/var",
	} {
		if b, err := vmtest.ReadFileFromExt4(disk, p); err != nil || string(b) != token+"\n" {
			t.Errorf("the write to %s is not in %s on the disk: %q, %v", where, p, b, err)
		}
	}
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// hasVerity reports whether debugfs shows the fs-verity inode flag
// (EXT4_VERITY_FL, 0x100000) on p.
func hasVerity(t *testing.T, disk, p string) bool {
	t.Helper()
	stat, err := vmtest.Debugfs(disk, "stat "+p)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`Flags: 0x([0-9a-f]+)`).FindStringSubmatch(stat)
	if m == nil {
		t.Fatalf("debugfs stat %s shows no flags:\n%s", p, stat)
	}
	flags, _ := strconv.ParseUint(m[1], 16, 32)
	return flags&0x100000 != 0
}

func (f *fixture) testTamperedObject(t *testing.T) {
	in := f.installed(t, "verity")
	const victim = "/usr/share/test/big.bin"
	obj := f.fileObject(t, victim)
	if !hasVerity(t, in.disk, obj) {
		t.Fatalf("object %s (%s) has no fs-verity in the secure repository", obj, victim)
	}
	const block = 10 // of 75: the reader gets the blocks before it
	const offset = block*vmtest.ExtBlockSize + 123

	// fs-verity itself catches a changed block of an object.
	t.Run("changed-after-verity", func(t *testing.T) {
		disk := f.diskCopy(t, in)
		blocks, err := vmtest.DataBlocks(disk, obj)
		if err != nil {
			t.Fatal(err)
		}
		if err := vmtest.FlipByte(disk, blocks[block]*vmtest.ExtBlockSize+offset%vmtest.ExtBlockSize); err != nil {
			t.Fatal(err)
		}
		vm := f.boot(t, disk, in, "", "cfstest.read="+victim+",/usr/share/test/medium.txt")
		out := f.waitDone(t, vm, in)
		got := consoleLine(out, "cfstest: read "+victim+":")
		m := regexp.MustCompile(`error after (\d+) bytes: input/output error$`).FindStringSubmatch(got)
		if m == nil {
			t.Fatalf("reading the tampered %s: %q; want an I/O error", victim, got)
		}
		if n, _ := strconv.Atoi(m[1]); n > block*vmtest.ExtBlockSize {
			t.Errorf("read %d bytes of %s before the error, past the corrupted block at %d", n, victim, block*vmtest.ExtBlockSize)
		}
		f.checkReads(t, out, []string{"/usr/share/test/medium.txt"})
		if !strings.Contains(out, "FILE CORRUPTED") {
			t.Error("the kernel did not log fs-verity's FILE CORRUPTED")
		}
	})

	// A changed copy without fs-verity reads fine as a file; only
	// overlayfs's verity=require, which checks the object's digest
	// against the image's on open, stops it.
	t.Run("replaced-without-verity", func(t *testing.T) {
		disk := f.diskCopy(t, in)
		forged := append([]byte(nil), f.files[victim].data...)
		forged[offset] ^= 0xff
		replaceOnDisk(t, disk, obj, forged)
		vm := f.boot(t, disk, in, "", "cfstest.read="+victim+",/usr/share/test/medium.txt")
		out := f.waitDone(t, vm, in)
		if got, want := consoleLine(out, "cfstest: read "+victim+":"), "cfstest: read "+victim+": error after 0 bytes: input/output error"; got != want {
			t.Errorf("reading %s whose object lost fs-verity:\n got %q\nwant %q", victim, got, want)
		}
		f.checkReads(t, out, []string{"/usr/share/test/medium.txt"})
	})
}

// imageTamper is a one-byte change to the installed image that alters the
// content of the inline file tiny.txt, so an image that got past cfs-init
// would serve a changed file.
type imageTamper struct {
	obj    string // the image's object, path in the disk
	offset int64  // of the byte in the image
	forged []byte // the image with that byte changed
}

// tinyMask turns tiny.txt's "tiny file" into "Tiny file".
const tinyMask = 'T' ^ 't'

func (f *fixture) imageTamper(t *testing.T, in *install) imageTamper {
	t.Helper()
	tm := imageTamper{obj: objectPath(in.image)}
	orig := filepath.Join(t.TempDir(), "image")
	if err := vmtest.DumpFileFromExt4(in.disk, tm.obj, orig); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	if got := verity.DigestBytes(b).String(); got != in.image {
		t.Fatalf("image object %s has digest %s, want %s", tm.obj, got, in.image)
	}
	tiny := f.files["/usr/share/test/tiny.txt"].data
	i := bytes.Index(b, tiny)
	if i < 0 {
		t.Fatalf("tiny.txt (%d bytes) is not inline in the image", len(tiny))
	}
	tm.offset = int64(i)
	tm.forged = append([]byte(nil), b...)
	tm.forged[i] ^= tinyMask
	return tm
}

// replaceOnDisk replaces the file p of the disk image's ext4 by a new file
// holding content, as someone with the disk offline could: the new file
// has no fs-verity.
func replaceOnDisk(t *testing.T, disk, p string, content []byte) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "forged")
	if err := os.WriteFile(src, content, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := vmtest.ReplaceFileInExt4(disk, p, src); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) testTamperedImage(t *testing.T) {
	in := f.installed(t, "verity")
	tm := f.imageTamper(t, in)
	if !hasVerity(t, in.disk, tm.obj) {
		t.Fatalf("image %s has no fs-verity in the secure repository", tm.obj)
	}
	forgedDigest := verity.DigestBytes(tm.forged).String()

	t.Run("changed-after-verity", func(t *testing.T) {
		disk := f.diskCopy(t, in)
		blocks, err := vmtest.DataBlocks(disk, tm.obj)
		if err != nil {
			t.Fatal(err)
		}
		off := blocks[tm.offset/vmtest.ExtBlockSize]*vmtest.ExtBlockSize + tm.offset%vmtest.ExtBlockSize
		if err := vmtest.FlipByte(disk, off); err != nil {
			t.Fatal(err)
		}
		vm := f.boot(t, disk, in, "", "cfstest.read=/usr/share/test/tiny.txt")
		f.expectRefused(t, vm, in, in.image, "input/output error")
	})

	// The attacker replaces the image by a changed copy and enables
	// fs-verity on it, in a boot of their own: the kernel then vouches
	// for the forged image's digest, which is not the entry's.
	t.Run("replaced-with-verity", func(t *testing.T) {
		disk := f.diskCopy(t, in)
		forged := sysroot + "/forged-image"
		steps := []installerStep{
			cmdStep("/bin/cp", sysroot+tm.obj, forged),
			{Flip: &flipStep{Path: forged, Offset: tm.offset, Mask: tinyMask}},
			{Verity: forged},
			cmdStep("/bin/mv", "-f", forged, sysroot+tm.obj),
		}
		if vm, err := f.runInstaller(t, t.Name()+" (attacker)", []string{disk}, steps); err != nil {
			if vm != nil {
				t.Logf("attacker's boot:\n%s", vm.Output())
			}
			t.Fatal(err)
		}
		vm := f.boot(t, disk, in, "", "cfstest.read=/usr/share/test/tiny.txt")
		f.expectRefused(t, vm, in, in.image, forgedDigest)
	})

	// The same change written offline: the new file has no fs-verity.
	t.Run("replaced-without-verity", func(t *testing.T) {
		disk := f.diskCopy(t, in)
		replaceOnDisk(t, disk, tm.obj, tm.forged)
		vm := f.boot(t, disk, in, "", "cfstest.read=/usr/share/test/tiny.txt")
		f.expectRefused(t, vm, in, in.image, "fs-verity is not enabled")
	})

	t.Run("entry-digest-off-by-one", func(t *testing.T) {
		disk := f.diskCopy(t, in)
		wrong := offByOne(in.image)
		vm := f.boot(t, disk, in, replaceArg(in.entry.Options, "composefs", "composefs="+wrong))
		f.expectRefused(t, vm, in, wrong)
	})
}

// offByOne changes the last hex digit of a digest.
func offByOne(d string) string {
	last := d[len(d)-1]
	next := "0123456789abcdef"[(strings.IndexByte("0123456789abcdef", last)+1)%16]
	return d[:len(d)-1] + string(next)
}

func (f *fixture) testInsecure(t *testing.T) {
	in := f.installed(t, "insecure")
	if feats, err := vmtest.Debugfs(in.disk, "features"); err != nil || strings.Contains(feats, "verity") {
		t.Fatalf("the insecure disk should lack the verity feature: %q, %v", feats, err)
	}
	if got := argValue(in.entry.Options, "composefs"); got != "?"+in.image {
		t.Fatalf("entry options %q: composefs=%s, want ?%s for a repository without fs-verity", in.entry.Options, got, in.image)
	}
	reads := f.checkedFiles()

	t.Run("boot", func(t *testing.T) {
		disk := f.diskCopy(t, in)
		vm := f.boot(t, disk, in, "", "cfstest.read="+strings.Join(reads, ","))
		out := f.waitDone(t, vm, in)
		warning := ""
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "cfs-init:") && strings.Contains(l, "INSECURE") {
				warning = l
			}
		}
		if warning == "" {
			t.Error("cfs-init printed no INSECURE warning for composefs=?")
		} else {
			t.Logf("warning: %s", strings.TrimSpace(warning))
		}
		if root := mountLine(out, "/"); root == nil || root[2] != "overlay" || strings.Contains(root[3], "verity=require") {
			t.Errorf("/ should be the composefs overlay without verity=require; /proc/mounts has %q", root)
		}
		f.checkReads(t, out, reads)
		r := bootRecordOf(t, vm.Output())
		if r.Digest != in.image || !r.Insecure || r.KernelVerity {
			t.Errorf("booted.json: digest %s insecure %v kernel_verity %v; want %s, true, false", r.Digest, r.Insecure, r.KernelVerity, in.image)
		}
	})

	// Without fs-verity, cfs-init computes the image's digest itself: a
	// changed image is refused all the same.
	t.Run("tampered-image", func(t *testing.T) {
		disk := f.diskCopy(t, in)
		tm := f.imageTamper(t, in)
		replaceOnDisk(t, disk, tm.obj, tm.forged)
		vm := f.boot(t, disk, in, "", "cfstest.read=/usr/share/test/tiny.txt")
		f.expectRefused(t, vm, in, in.image, verity.DigestBytes(tm.forged).String())
	})
}

func (f *fixture) testFailures(t *testing.T) {
	in := f.installed(t, "verity")

	t.Run("missing-root-device", func(t *testing.T) {
		disk := f.diskCopy(t, in)
		vm := f.boot(t, disk, in, replaceArg(in.entry.Options, "root", "root=/dev/vdz"))
		f.expectRefused(t, vm, in, "/dev/vdz", "did not appear")
	})

	t.Run("missing-image", func(t *testing.T) {
		disk := f.diskCopy(t, in)
		if err := vmtest.RemoveFromExt4(disk, objectPath(in.image)); err != nil {
			t.Fatal(err)
		}
		vm := f.boot(t, disk, in, "")
		f.expectRefused(t, vm, in, in.image, "missing")
	})

	t.Run("malformed-digest", func(t *testing.T) {
		disk := f.diskCopy(t, in)
		bad := "composefs=" + in.image[:40]
		vm := f.boot(t, disk, in, replaceArg(in.entry.Options, "composefs", bad))
		f.expectRefused(t, vm, in, "composefs=", "64 hex digits")
	})
}
