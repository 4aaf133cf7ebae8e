package vmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func needE2fsprogs(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (e2fsprogs)", tool)
		}
	}
}

func TestReadBootEntry(t *testing.T) {
	needE2fsprogs(t)
	img := MakeExt4(t, "8M", map[string]string{
		"boot/loader/loader.conf":                   "timeout 3\n# default old.conf\ndefault cfs-deploy-*.conf\n",
		"boot/loader/entries/old.conf":              "linux /k/old\noptions root=/dev/old\n",
		"boot/loader/entries/cfs-deploy-a+2-1.conf": "title test\nlinux /k/vmlinuz\ninitrd /k/one\ninitrd\t/k/two\noptions root=UUID=x rw\noptions composefs=abc\n",
		"boot/k/vmlinuz":                            "KERNEL",
		"boot/k/one":                                "first-",
		"boot/k/two":                                "second",
	}, false)
	dir := t.TempDir()
	be, err := ReadBootEntry(img, "/boot", dir)
	if err != nil {
		t.Fatal(err)
	}
	if be.File != "cfs-deploy-a+2-1.conf" || be.Default != "cfs-deploy-*.conf" || be.Linux != "/k/vmlinuz" ||
		strings.Join(be.Initrd, " ") != "/k/one /k/two" || be.Options != "root=UUID=x rw composefs=abc" {
		t.Errorf("got %+v", be)
	}
	if b, _ := os.ReadFile(be.Kernel); string(b) != "KERNEL" {
		t.Errorf("kernel copy holds %q", b)
	}
	if b, _ := os.ReadFile(be.InitrdFile); string(b) != "first-second" || be.InitrdSize != 12 {
		t.Errorf("initrd copy holds %q (size %d)", b, be.InitrdSize)
	}
}

// TestReadBootEntryOrder: without a default line the entry systemd-boot
// sorts first boots: sort-key entries by version, newest first; an
// exhausted counter last.
func TestReadBootEntryOrder(t *testing.T) {
	needE2fsprogs(t)
	entry := func(version string) string {
		return "title t\nversion " + version + "\nsort-key cfs-deploy\nlinux /k/" + version + "\noptions composefs=" + version + "\n"
	}
	files := map[string]string{
		"boot/loader/loader.conf":                   "timeout 0\n",
		"boot/loader/entries/zz-nosortkey.conf":     "linux /k/zz\n",
		"boot/loader/entries/cfs-deploy-a.conf":     entry("9"),
		"boot/loader/entries/cfs-deploy-b.conf":     entry("10"),
		"boot/loader/entries/cfs-deploy-c+0-2.conf": entry("11"),
		"boot/k/9": "nine", "boot/k/10": "ten", "boot/k/11": "eleven", "boot/k/zz": "zz",
	}
	img := MakeExt4(t, "8M", files, false)
	be, err := ReadBootEntry(img, "/boot", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := "cfs-deploy-b.conf cfs-deploy-a.conf zz-nosortkey.conf cfs-deploy-c+0-2.conf"
	if be.File != "cfs-deploy-b.conf" || strings.Join(be.Order, " ") != want {
		t.Errorf("boots %s, order %v; want %s", be.File, be.Order, want)
	}
}

func TestEntryMatches(t *testing.T) {
	for _, c := range []struct {
		pattern, file string
		want          bool
	}{
		{"a.conf", "a.conf", true},
		// systemd-boot 252 matches the ID with its boot counter
		// (uefi-boot-counting.md): NAME.conf no longer matches once the
		// file is NAME+0-1.conf, while a glob NAME* still does.
		{"a.conf", "a+3.conf", false},
		{"a.conf", "a+0-3.conf", false},
		{"a*", "a+0-3.conf", true},
		{"a+1.conf", "a+1.conf", true},
		{"a*.conf", "ab.conf", true},
		{"a.conf", "a+x.conf", false},
		{"b.conf", "a.conf", false},
	} {
		if got := entryMatches(c.pattern, c.file); got != c.want {
			t.Errorf("entryMatches(%q, %q) = %v", c.pattern, c.file, got)
		}
	}
}

func TestExt4Edits(t *testing.T) {
	needE2fsprogs(t)
	img := MakeExt4(t, "8M", map[string]string{"d/f": "old content", "d/g": "gone soon"}, true)
	src := filepath.Join(t.TempDir(), "new")
	if err := os.WriteFile(src, []byte("new content"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceFileInExt4(img, "/d/f", src); err != nil {
		t.Fatal(err)
	}
	if err := RemoveFromExt4(img, "/d/g"); err != nil {
		t.Fatal(err)
	}
	ents, err := ListExt4Dir(img, "/d")
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name != "f" || ents[0].Mode != 0o100444 || ents[0].Size != 11 {
		t.Errorf("/d lists %+v, want only f, 0444, 11 bytes", ents)
	}
	if b, err := ReadFileFromExt4(img, "/d/f"); err != nil || string(b) != "new content" {
		t.Errorf("/d/f: %q, %v", b, err)
	}
	if err := RemoveFromExt4(img, "/d/missing"); err == nil {
		t.Error("removing a missing file succeeded")
	}
	cp := filepath.Join(t.TempDir(), "copy.img")
	if err := CopySparse(img, cp); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFileFromExt4(cp, "/d/f"); err != nil || string(b) != "new content" {
		t.Errorf("copy: /d/f: %q, %v", b, err)
	}
}
