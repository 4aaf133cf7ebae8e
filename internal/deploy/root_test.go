package deploy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountInfo(t *testing.T) {
	lines := []string{
		`36 35 98:0 /mnt1 /mnt/with\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue`,
		`29 1 253:0 / / rw,relatime shared:1 master:2 - xfs /dev/mapper/vg-root rw`,
		`40 29 0:45 / /home rw - btrfs /dev/vdb2 rw,subvol=/home`,
		`bad line`,
	}
	path := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		major, minor uint32
		want         mountInfo
	}{
		{98, 0, mountInfo{Major: 98, Minor: 0, MountPoint: "/mnt/with space", FSType: "ext3", Source: "/dev/root"}},
		{253, 0, mountInfo{Major: 253, Minor: 0, MountPoint: "/", FSType: "xfs", Source: "/dev/mapper/vg-root"}},
		{0, 45, mountInfo{Major: 0, Minor: 45, MountPoint: "/home", FSType: "btrfs", Source: "/dev/vdb2"}},
	} {
		got, err := findMount(path, c.major, c.minor)
		if err != nil || got != c.want {
			t.Errorf("%d:%d: got %+v, %v; want %+v", c.major, c.minor, got, err, c.want)
		}
	}
	if _, err := findMount(path, 8, 1); err == nil {
		t.Errorf("found a mount that is not there")
	}
}

func TestDetectRootNotABlockDevice(t *testing.T) {
	// /proc has no device behind it.
	_, err := DetectRoot("/proc")
	if err == nil || !strings.Contains(err.Error(), "not on a block device") {
		t.Fatalf("DetectRoot(/proc): %v", err)
	}
}

// On this host the root file system is a real ext4 device; compare with
// blkid when the device node can be read (containers often forbid it).
func TestDetectRootHost(t *testing.T) {
	dir := t.TempDir()
	got, err := DetectRoot(dir)
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("cannot read the device: %v", err)
	}
	if err != nil {
		t.Skipf("no probeable root here: %v", err)
	}
	if !strings.HasPrefix(got, "UUID=") {
		t.Fatalf("DetectRoot = %q", got)
	}
	blkid, err := exec.LookPath("blkid")
	if err != nil {
		return
	}
	mi, _ := findMountOf(t, dir)
	dev, err := mountDevice(mi)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(blkid, "-s", "UUID", "-o", "value", dev).Output()
	if err != nil {
		t.Skipf("blkid %s: %v", dev, err)
	}
	if want := "UUID=" + strings.TrimSpace(string(out)); got != want {
		t.Errorf("DetectRoot = %q, blkid says %q", got, want)
	}
}

func findMountOf(t *testing.T, dir string) (mountInfo, error) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return findMount("/proc/self/mountinfo", unix.Major(st.Dev), unix.Minor(st.Dev))
}

// mountExt4 mounts a new ext4 file system with the given UUID (through a
// loop device) and returns its mount point, or skips the test.
func mountExt4(t *testing.T, uuid string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("no mkfs.ext4")
	}
	base := t.TempDir()
	img := filepath.Join(base, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 256<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-U", uuid, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount here: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
		}
	})
	return mnt
}

func TestDetectRootLoop(t *testing.T) {
	const uuid = "5eb1a2c3-0d4e-4f60-8a9b-0c1d2e3f4a5b"
	mnt := mountExt4(t, uuid)
	sub := filepath.Join(mnt, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := DetectRoot(sub)
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("cannot read the loop device: %v", err)
	}
	if err != nil || got != "UUID="+uuid {
		t.Fatalf("DetectRoot = %q, %v; want UUID=%s", got, err, uuid)
	}
}

// Without --root the entry names the sysroot's file system by UUID.
func TestRolloutDetectsRoot(t *testing.T) {
	const uuid = "7a7b7c7d-1111-4222-8333-944445555666"
	mnt := mountExt4(t, uuid)
	f := newFixtureIn(t, mnt)
	c := f.commit("os", "1")
	res, err := Rollout(Options{Repo: f.r, Ref: "os", Init: f.init, AllowInsecure: true})
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("cannot read the loop device: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	want := "root=UUID=" + uuid + " rw composefs=?" + c.Image.String()
	if res.Cmdline != want {
		t.Errorf("cmdline %q, want %q", res.Cmdline, want)
	}
	if res.StateDir != StateDir(mnt, c.Image) || !strings.HasPrefix(res.Entry, filepath.Join(mnt, "boot")) {
		t.Errorf("defaults: state %s entry %s", res.StateDir, res.Entry)
	}
}
