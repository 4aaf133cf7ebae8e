package vmtest

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestESPDisk builds an ESP disk from a host tree, edits it the ways a
// boot test does, and checks the result with fsck.vfat and sfdisk: no
// VM involved.
func TestESPDisk(t *testing.T) {
	for _, tool := range []string{"mcopy", "mkfs.vfat", "sfdisk", "fsck.vfat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (mtools, dosfstools, fdisk)", tool)
		}
	}
	src := t.TempDir()
	files := map[string]string{
		"loader/loader.conf":          "timeout 0\n",
		"loader/entries/good.conf":    "title good\n",
		"loader/entries/bad+1.conf":   "title bad\n",
		"cfs-deploy/vmlinuz-6.12-abc": "kernel bytes",
	}
	for p, c := range files {
		full := filepath.Join(src, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d, err := NewESPDisk(filepath.Join(t.TempDir(), "esp.img"), 40)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CopyTree(src, "/"); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Entries(); err != nil || !reflect.DeepEqual(got, []string{"bad+1.conf", "good.conf"}) {
		t.Fatalf("Entries = %q, %v", got, err)
	}
	if got, err := d.ReadFile("/cfs-deploy/vmlinuz-6.12-abc"); err != nil || string(got) != "kernel bytes" {
		t.Errorf("ReadFile = %q, %v", got, err)
	}

	// What systemd-boot does before booting a counted entry, and what
	// marking it good does.
	if err := d.Rename("/loader/entries/bad+1.conf", "/loader/entries/bad+0-1.conf"); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteFile("/loader/entries/new/deep.conf", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteFile("/loader/loader.conf", []byte("timeout 3\n")); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("/loader/entries/good.conf"); err != nil {
		t.Fatal(err)
	}
	if err := d.AppendEntryOptions("bad+0-1.conf", "console=ttyS0", "x=1"); err != nil {
		t.Fatal(err)
	}
	if got, err := d.ReadFile("/loader/entries/bad+0-1.conf"); err != nil || string(got) != "title bad\noptions console=ttyS0 x=1\n" {
		t.Errorf("after AppendEntryOptions: %q, %v", got, err)
	}
	ents, err := d.ReadDir("/loader/entries")
	if want := []ESPDirEntry{{"bad+0-1.conf", false}, {"new", true}}; err != nil || !reflect.DeepEqual(ents, want) {
		t.Errorf("ReadDir = %v, %v; want %v", ents, err, want)
	}
	out := filepath.Join(t.TempDir(), "loader.conf")
	if err := d.CopyOut("/loader/loader.conf", out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "timeout 3\n" {
		t.Errorf("CopyOut after WriteFile: %q", b)
	}
	if _, err := d.ReadDir("/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadDir of a missing directory: %v", err)
	}
	if _, err := d.ReadFile("/missing.conf"); err == nil {
		t.Error("ReadFile of a missing file succeeded")
	}

	// A symbolic link cannot go onto FAT.
	os.Symlink("good.conf", filepath.Join(src, "loader/entries/link.conf"))
	if err := d.CopyTree(src, "/"); err == nil {
		t.Error("CopyTree copied a symbolic link")
	}

	pt, err := exec.Command("sfdisk", "--dump", d.Path).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk --dump: %v\n%s", err, pt)
	}
	if !strings.Contains(string(pt), "start=        2048, size=       81920, type="+espType) {
		t.Errorf("want one ESP of 40 MiB at 1 MiB; sfdisk --dump:\n%s", pt)
	}
	// fsck.vfat checks a file system image, not a partitioned disk: cut
	// the partition out.
	part := filepath.Join(t.TempDir(), "part.img")
	if out, err := exec.Command("dd", "if="+d.Path, "of="+part, "bs=1M", "skip=1", "count=40", "conv=sparse", "status=none").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v\n%s", err, out)
	}
	if out, err := exec.Command("fsck.vfat", "-n", part).CombinedOutput(); err != nil {
		t.Errorf("fsck.vfat -n: %v\n%s", err, out)
	}
}

func TestESPCopyTreeFromExt4(t *testing.T) {
	for _, tool := range []string{"mcopy", "mkfs.vfat", "sfdisk", "mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (mtools, dosfstools, fdisk, e2fsprogs)", tool)
		}
	}
	img := MakeExt4(t, "8M", map[string]string{
		"boot/loader/entries/a+2.conf": "title a\n",
		"boot/cfs-deploy/vmlinuz-x":    "kernel",
		"etc/other":                    "not copied",
	}, false)
	d, err := NewESPDisk(filepath.Join(t.TempDir(), "esp.img"), 40)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CopyTreeFromExt4(img, "/boot", "/"); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Entries(); err != nil || !reflect.DeepEqual(got, []string{"a+2.conf"}) {
		t.Errorf("Entries = %q, %v", got, err)
	}
	if got, err := d.ReadFile("/cfs-deploy/vmlinuz-x"); err != nil || string(got) != "kernel" {
		t.Errorf("kernel = %q, %v", got, err)
	}
	if ents, err := d.ReadDir("/"); err != nil || len(ents) != 2 {
		t.Errorf("ESP root holds %v, %v; want cfs-deploy and loader", ents, err)
	}
	if err := d.CopyTreeFromExt4(img, "/missing", "/"); err == nil {
		t.Error("copying a missing directory succeeded")
	}
}
