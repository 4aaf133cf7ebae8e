//go:build linux

package mount

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

func mustMount(t *testing.T, target string, opts Options) {
	t.Helper()
	if err := Mount(target, opts); err != nil {
		t.Fatalf("Mount: %v", err)
	}
}

func mustUnmount(t *testing.T, target string) {
	t.Helper()
	// The EROFS layer goes with the overlay: nothing else holds it.
	if err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if m := mountsAt(t, target); len(m) != 0 {
		t.Fatalf("still mounted after Unmount: %+v", m)
	}
}

func TestMountReadOnly(t *testing.T) {
	requireRoot(t)
	fx := newFixture(t, "objects")
	mnt := mountPoint(t)
	mustMount(t, mnt, fx.opts())
	checkNoLeftovers(t, fx.image)

	ms := mountsAt(t, mnt)
	if len(ms) != 1 || ms[0].fstype != "overlay" || ms[0].source != "composefs" {
		t.Fatalf("mountinfo at %s: %+v, want one overlay from composefs", mnt, ms)
	}
	so := ms[0].superOpts
	t.Logf("overlay options: %s", so)
	for _, want := range []string{"ro", "metacopy=on", "redirect_dir=on", "datadir+=" + fx.objects} {
		if !strings.Contains(","+so+",", ","+want+",") {
			t.Errorf("overlay options %q lack %q", so, want)
		}
	}
	if strings.Contains(so, "verity=") {
		t.Errorf("overlay options %q name verity without being asked to", so)
	}
	fx.check(t, mnt, view{})

	err := os.WriteFile(filepath.Join(mnt, "new"), []byte("x"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("creating a file: %v, want EROFS", err)
	}
	if err := os.Chmod(filepath.Join(mnt, "hello.txt"), 0o600); !errors.Is(err, syscall.EROFS) {
		t.Errorf("chmod: %v, want EROFS", err)
	}
	mustUnmount(t, mnt)
	checkNoLeftovers(t, fx.image)
}

func TestMountDigest(t *testing.T) {
	requireRoot(t)
	fx := newFixture(t, "objects")
	if _, err := verity.Measure(openForTest(t, fx.image)); err == nil {
		t.Skip("the image has fs-verity here; these cases assume a filesystem without it")
	}
	right := fx.digest
	wrong := right
	wrong[0] ^= 0xff

	t.Run("wrong digest", func(t *testing.T) {
		for _, allow := range []bool{false, true} {
			mnt := mountPoint(t)
			opts := fx.opts()
			opts.ExpectDigest = &wrong
			opts.AllowUserspaceDigest = allow
			err := Mount(mnt, opts)
			var mm *DigestMismatchError
			if allow {
				if !errors.As(err, &mm) || mm.Want != wrong || mm.Got != right || mm.FromKernel {
					t.Errorf("allow userspace: %v, want a userspace digest mismatch", err)
				}
			} else if !errors.Is(err, ErrNoVerity) {
				// Without verity the kernel cannot tell; refusing for lack
				// of verity comes before any comparison.
				t.Errorf("kernel only: %v, want ErrNoVerity", err)
			}
			if m := mountsAt(t, mnt); len(m) != 0 {
				t.Errorf("refused image is mounted: %+v", m)
			}
			checkNoLeftovers(t, fx.image)
		}
	})
	t.Run("right digest, userspace allowed", func(t *testing.T) {
		mnt := mountPoint(t)
		opts := fx.opts()
		opts.ExpectDigest = &right
		opts.AllowUserspaceDigest = true
		mustMount(t, mnt, opts)
		fx.check(t, mnt, view{})
		mustUnmount(t, mnt)
	})
	t.Run("right digest, kernel required", func(t *testing.T) {
		mnt := mountPoint(t)
		opts := fx.opts()
		opts.ExpectDigest = &right
		err := Mount(mnt, opts)
		if !errors.Is(err, ErrNoVerity) || !strings.Contains(err.Error(), "no fs-verity") {
			t.Errorf("got %v, want ErrNoVerity", err)
		}
		if !errors.Is(err, verity.ErrUnsupported) && !errors.Is(err, verity.ErrNotEnabled) {
			t.Errorf("%v does not say why there is no verity", err)
		}
		if m := mountsAt(t, mnt); len(m) != 0 {
			t.Errorf("refused image is mounted: %+v", m)
		}
	})
}

func openForTest(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestMountRefusesNonComposefs(t *testing.T) {
	requireRoot(t)
	fx := newFixture(t, "objects")
	dir := t.TempDir()

	// A valid EROFS superblock with the composefs header wiped: EROFS
	// would mount it, composefs must not.
	raw, err := os.ReadFile(fx.image)
	if err != nil {
		t.Fatal(err)
	}
	clear(raw[:4])
	noHeader := filepath.Join(dir, "noheader")
	tiny := filepath.Join(dir, "tiny")
	text := filepath.Join(dir, "text")
	for p, data := range map[string][]byte{noHeader: raw, tiny: {0x9a, 0x62}, text: []byte(strings.Repeat("not an image\n", 100))} {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, img := range []string{noHeader, tiny, text, dir} {
		mnt := mountPoint(t)
		opts := fx.opts()
		opts.Image = img
		err := Mount(mnt, opts)
		if !errors.Is(err, ErrNotComposefs) {
			t.Errorf("%s: %v, want ErrNotComposefs", filepath.Base(img), err)
		}
		if m := mountsAt(t, mnt); len(m) != 0 {
			t.Errorf("%s: mounted anyway: %+v", filepath.Base(img), m)
		}
	}
	// The composefs header intact, the EROFS superblock wiped: the kernel
	// refuses, from the file and from a loop device, and says so.
	raw[0], raw[1], raw[2], raw[3] = 0x9a, 0x62, 0x78, 0xd0
	clear(raw[1024 : 1024+4])
	badSB := filepath.Join(dir, "badsb")
	if err := os.WriteFile(badSB, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, loop := range []bool{false, true} {
		forceLoop = loop
		mnt := mountPoint(t)
		opts := fx.opts()
		opts.Image = badSB
		err := Mount(mnt, opts)
		forceLoop = false
		var me *MountError
		if !errors.As(err, &me) || me.Step != StepErofs {
			t.Errorf("bad superblock (loop %v): %v, want an erofs MountError", loop, err)
		}
		t.Logf("bad superblock (loop %v): %v", loop, err)
		if m := mountsAt(t, mnt); len(m) != 0 {
			t.Errorf("bad superblock: mounted anyway: %+v", m)
		}
		checkNoLeftovers(t, badSB)
	}

	if err := Mount(mountPoint(t), Options{Image: filepath.Join(dir, "missing"), ObjectDirs: []string{dir}}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing image: %v, want ErrNotExist", err)
	}
	checkNoLeftovers(t, fx.image)
}

func TestMountBadOptions(t *testing.T) {
	fx := &fixture{image: "/nonexistent.cfs"}
	for name, opts := range map[string]Options{
		"no image":      {ObjectDirs: []string{"/x"}},
		"no basedir":    {Image: fx.image},
		"empty basedir": {Image: fx.image, ObjectDirs: []string{""}},
		"upper alone":   {Image: fx.image, ObjectDirs: []string{"/x"}, UpperDir: "/u"},
		"work alone":    {Image: fx.image, ObjectDirs: []string{"/x"}, WorkDir: "/w"},
	} {
		if err := Mount("/nonexistent-target", opts); err == nil {
			t.Errorf("%s: Mount succeeded", name)
		}
	}
}

func TestMountUpperDir(t *testing.T) {
	requireRoot(t)
	fx := newFixture(t, "objects")
	state := t.TempDir()
	upper, work := filepath.Join(state, "upper"), filepath.Join(state, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mnt := mountPoint(t)
	opts := fx.opts()
	opts.UpperDir, opts.WorkDir, opts.ReadWrite = upper, work, true
	mustMount(t, mnt, opts)
	fx.check(t, mnt, view{upperRoot: true})

	if err := os.WriteFile(filepath.Join(mnt, "new.txt"), []byte("written\n"), 0o644); err != nil {
		t.Fatalf("write to the mount: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "hello.txt"), []byte("changed\n"), 0o644); err != nil {
		t.Fatalf("overwrite a lower file: %v", err)
	}
	if err := os.Remove(filepath.Join(mnt, "small.txt")); err != nil {
		t.Fatalf("remove a lower file: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "new.txt")); err != nil || string(b) != "written\n" {
		t.Errorf("upper/new.txt: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "hello.txt")); err != nil || string(b) != "changed\n" {
		t.Errorf("upper/hello.txt (copied up): %q, %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(upper, "small.txt"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("upper/small.txt is not a whiteout: %+v, %v", st, err)
	}
	// The object the old hello.txt pointed to is untouched.
	d := verity.DigestBytes(fx.content[fx.root.Lookup("hello.txt")])
	if got, err := verity.DigestPath(filepath.Join(fx.objects, d.ObjectPath())); err != nil || got != d {
		t.Errorf("object changed by a write through the overlay: %v %v", got, err)
	}
	mustUnmount(t, mnt)
	checkNoLeftovers(t, fx.image)
}

// TestMountIdmap mounts the image through a user namespace that maps ids
// 0..65535 to 100000..165535: every owner shows shifted by 100000.
func TestMountIdmap(t *testing.T) {
	requireRoot(t)
	fx := newFixture(t, "objects")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1) to hold a user namespace")
	}
	cmd := exec.Command(sleep, "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot create a user namespace: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	mnt := mountPoint(t)
	opts := fx.opts()
	opts.IdmapUserns = "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user"
	mustMount(t, mnt, opts)
	fx.check(t, mnt, view{uid: 100000, gid: 100000})
	mustUnmount(t, mnt)
	checkNoLeftovers(t, fx.image)
}

// TestMountFallbacks forces each path this kernel would not take by itself
// and checks the result is the same tree.
func TestMountFallbacks(t *testing.T) {
	requireRoot(t)
	fx := newFixture(t, "objects")
	cases := []struct {
		name                              string
		loop, legacyErofs, attach, legacy bool
		wantOpt                           string // in the overlay's mountinfo options
	}{
		{name: "loop", loop: true, wantOpt: "datadir+="},
		{name: "attached layer", attach: true, wantOpt: "lowerdir+=/run/.cfs-mount-"},
		{name: "legacy overlay", legacy: true, wantOpt: "lowerdir=/run/.cfs-mount-"},
		{name: "legacy everything", legacy: true, legacyErofs: true, wantOpt: "::" + fx.objects},
		{name: "legacy overlay on loop", legacy: true, loop: true, wantOpt: "::" + fx.objects},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			forceLoop, forceLegacyErofs, forceAttach, forceLegacy = c.loop, c.legacyErofs, c.attach, c.legacy
			t.Cleanup(func() { forceLoop, forceLegacyErofs, forceAttach, forceLegacy = false, false, false, false })
			mnt := mountPoint(t)
			fds := openFDs(t)
			mustMount(t, mnt, fx.opts())
			if n := openFDs(t); n != fds {
				t.Errorf("%d descriptors open after Mount, %d before", n, fds)
			}
			ms := mountsAt(t, mnt)
			if len(ms) != 1 || !strings.Contains(ms[0].superOpts, c.wantOpt) {
				t.Errorf("mountinfo %+v lacks %q", ms, c.wantOpt)
			}
			t.Logf("overlay options: %s", ms[0].superOpts)
			if loops := loopsBackedBy(fx.image); c.loop != (len(loops) > 0) {
				t.Errorf("loop devices on the image while mounted: %q (loop path forced: %v)", loops, c.loop)
			}
			fx.check(t, mnt, view{})
			mustUnmount(t, mnt)
			checkNoLeftovers(t, fx.image)
		})
	}
}

// TestMountOddPaths puts the object store and the upper directory at paths
// with the characters overlayfs splits its options on.
func TestMountOddPaths(t *testing.T) {
	requireRoot(t)
	fx := newFixture(t, `obj,ects:with\odd chars`)
	for _, legacy := range []bool{false, true} {
		forceLegacy = legacy
		t.Cleanup(func() { forceLegacy = false })
		state := filepath.Join(t.TempDir(), `st:a,te\x`)
		upper, work := filepath.Join(state, "up,per"), filepath.Join(state, `wo:rk\`)
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		mnt := mountPoint(t)
		opts := fx.opts()
		opts.UpperDir, opts.WorkDir = upper, work
		mustMount(t, mnt, opts)
		fx.check(t, mnt, view{upperRoot: true})
		if err := os.WriteFile(filepath.Join(mnt, "x"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("legacy=%v: write to a mount without ReadWrite: %v, want EROFS", legacy, err)
		}
		mustUnmount(t, mnt)
	}
	checkNoLeftovers(t, fx.image)
}

// TestMountRequireVerityHere documents what verity=require does on a
// kernel or filesystem without fs-verity: the mount works, and opening a
// file whose content is an object fails with EIO.
func TestMountRequireVerityHere(t *testing.T) {
	requireRoot(t)
	fx := newFixture(t, "objects")
	hello := filepath.Join(fx.objects, verity.DigestBytes(fx.content[fx.root.Lookup("hello.txt")]).ObjectPath())
	if _, err := verity.Measure(openForTest(t, hello)); err == nil {
		t.Skip("objects have fs-verity here")
	}
	for _, c := range []struct{ legacy, try bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		legacy := c.legacy
		forceLegacy = legacy
		t.Cleanup(func() { forceLegacy = false })
		mnt := mountPoint(t)
		opts := fx.opts()
		opts.RequireVerity, opts.TryVerity = !c.try, c.try
		mustMount(t, mnt, opts)
		ms := mountsAt(t, mnt)
		if len(ms) != 1 || !strings.Contains(ms[0].superOpts, "verity=require") {
			t.Errorf("legacy=%v: mountinfo %+v lacks verity=require", legacy, ms)
		}
		if _, err := os.ReadFile(filepath.Join(mnt, "hello.txt")); !errors.Is(err, syscall.EIO) {
			t.Errorf("legacy=%v: reading an object without fs-verity: %v, want EIO", legacy, err)
		}
		if b, err := os.ReadFile(filepath.Join(mnt, "small.txt")); err != nil || string(b) != "tiny\n" {
			t.Errorf("legacy=%v: inline file: %q, %v", legacy, b, err)
		}
		mustUnmount(t, mnt)
	}
}

func TestMountErrorNamesStepAndKernelMessage(t *testing.T) {
	requireRoot(t)
	fx := newFixture(t, "objects")
	// A missing object directory fails at datadir+; the kernel's log says
	// why and the error must carry it.
	opts := fx.opts()
	opts.ObjectDirs = []string{filepath.Join(t.TempDir(), "missing")}
	err := Mount(mountPoint(t), opts)
	var me *MountError
	if !errors.As(err, &me) || me.Step != StepOverlay {
		t.Fatalf("got %v, want an overlay MountError", err)
	}
	if !errors.Is(err, unix.ENOENT) {
		t.Errorf("%v does not wrap ENOENT", err)
	}
	t.Logf("error: %v", err)
	checkNoLeftovers(t, fx.image)
}

// aclValue encodes a POSIX ACL as the system.posix_acl_access xattr holds
// it: version 2, then (tag, perm, id) entries sorted by tag and id.
func aclValue(entries ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

// TestMountACL checks the noacl decision both ways: an image whose header
// says it has ACLs is mounted with them and serves them; one without is
// mounted noacl, which saves ACL lookups.
func TestMountACL(t *testing.T) {
	requireRoot(t)
	const undef = 0xffffffff
	acl := aclValue([3]uint32{0x01, 6, undef}, [3]uint32{0x02, 4, 1234}, [3]uint32{0x04, 4, undef},
		[3]uint32{0x10, 4, undef}, [3]uint32{0x20, 0, undef})

	plain := newFixture(t, "objects")
	withACL := newFixture(t, "objects")
	withACL.root.Lookup("hello.txt").SetXattr("system.posix_acl_access", string(acl))
	withACL.root.Lookup("hello.txt").Mode = 0o100640
	withACL.write(t)

	for _, c := range []struct {
		fx       *fixture
		erofsOpt string
	}{
		{withACL, "acl"},
		{plain, "noacl"},
	} {
		// The EROFS layer's own options, seen by attaching it.
		img, err := openImage(c.fx.image, &Options{})
		if err != nil {
			t.Fatal(err)
		}
		l, err := mountErofs(img, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.attach(); err != nil {
			t.Fatal(err)
		}
		ms := mountsAt(t, l.dir)
		if len(ms) != 1 || !strings.Contains(","+ms[0].superOpts+",", ","+c.erofsOpt+",") {
			t.Errorf("EROFS mountinfo %+v lacks %q", ms, c.erofsOpt)
		}
		if err := l.release(false); err != nil {
			t.Error(err)
		}
		img.Close()

		mnt := mountPoint(t)
		mustMount(t, mnt, c.fx.opts())
		buf := make([]byte, 256)
		n, err := unix.Getxattr(filepath.Join(mnt, "hello.txt"), "system.posix_acl_access", buf)
		if c.fx == withACL && (err != nil || string(buf[:n]) != string(acl)) {
			t.Errorf("image with ACLs: getxattr: %x, %v; want %x", buf[:max(n, 0)], err, acl)
		}
		if c.fx == plain && !errors.Is(err, unix.ENODATA) {
			t.Errorf("image without ACLs: getxattr: %v, want ENODATA", err)
		}
		mustUnmount(t, mnt)
		checkNoLeftovers(t, c.fx.image)
	}
}

// TestFSContextLog checks that the kernel's own explanation reaches the
// error, using a mistake only a direct caller of the helpers can make:
// a lower layer after a data layer.
func TestFSContextLog(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	c, err := openFSContext("overlay", StepOverlay)
	if err != nil {
		t.Skipf("no fsopen for overlay: %v", err)
	}
	defer c.close()
	if err := c.setString("datadir+", dir); err != nil {
		t.Fatal(err)
	}
	err = c.setString("lowerdir+", dir)
	var me *MountError
	if !errors.As(err, &me) || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("lowerdir+ after datadir+: %v, want EINVAL", err)
	}
	if len(me.Log) == 0 || !strings.Contains(err.Error(), "overlay: ") {
		t.Errorf("no kernel message in %q", err)
	}
	t.Logf("error: %v", err)
}

func TestLegacyOptions(t *testing.T) {
	opts := &Options{ObjectDirs: []string{"/o1", `/o,2:x\y`}, UpperDir: "/u:p", WorkDir: "/w,k"}
	got := legacyOptions("/run/l", opts, "::", true)
	want := `metacopy=on,redirect_dir=on,lowerdir=/run/l::/o1::/o\,2\:x\\y,upperdir=/u\:p,workdir=/w\,k,verity=require`
	if got != want {
		t.Errorf("legacyOptions =\n %s, want\n %s", got, want)
	}
	got = legacyOptions("/l", &Options{ObjectDirs: []string{"/o"}}, ":", false)
	if want := "metacopy=on,redirect_dir=on,lowerdir=/l:/o"; got != want {
		t.Errorf("legacyOptions = %s, want %s", got, want)
	}
}

// TestMountLayerDir keeps the EROFS layer mounted where the caller says, so
// that the overlay's options name a path that exists after Mount returns;
// a failed Mount leaves nothing mounted there.
func TestMountLayerDir(t *testing.T) {
	requireRoot(t)
	fx := newFixture(t, "objects")
	for _, legacyErofs := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy-erofs=%v", legacyErofs), func(t *testing.T) {
			forceLegacyErofs = legacyErofs
			t.Cleanup(func() { forceLegacyErofs = false })
			mnt, layer := mountPoint(t), filepath.Join(mountPoint(t), "image")
			opts := fx.opts()
			opts.LayerDir = layer
			mustMount(t, mnt, opts)
			ms := mountsAt(t, mnt)
			if len(ms) != 1 || !strings.Contains(","+ms[0].superOpts, "lowerdir+="+layer+",") && !strings.Contains(ms[0].superOpts, "lowerdir="+layer+"::") {
				t.Errorf("overlay mountinfo %+v does not name the layer directory %s", ms, layer)
			}
			ls := mountsAt(t, layer)
			if len(ls) != 1 || ls[0].fstype != "erofs" {
				t.Fatalf("mountinfo at %s: %+v, want the EROFS layer", layer, ls)
			}
			// The layer shows the image's own tree: the metadata without
			// the file contents.
			if _, err := os.Lstat(filepath.Join(layer, "hello.txt")); err != nil {
				t.Errorf("the layer directory does not show the image: %v", err)
			}
			fx.check(t, mnt, view{})
			mustUnmount(t, mnt)
			if err := unix.Unmount(layer, 0); err != nil {
				t.Errorf("unmount the layer: %v", err)
			}
		})
	}
	t.Run("failure", func(t *testing.T) {
		mnt, layer := mountPoint(t), filepath.Join(mountPoint(t), "image")
		opts := fx.opts()
		opts.LayerDir = layer
		opts.UpperDir, opts.WorkDir = "/nonexistent/upper", "/nonexistent/work"
		if err := Mount(mnt, opts); err == nil {
			t.Fatal("Mount with a missing upper directory succeeded")
		}
		if ms := mountsAt(t, layer); len(ms) != 0 {
			t.Errorf("a failed Mount left %+v on the layer directory", ms)
		}
		if ms := mountsAt(t, mnt); len(ms) != 0 {
			t.Errorf("a failed Mount left %+v on the target", ms)
		}
	})
}
