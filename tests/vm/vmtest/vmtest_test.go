package vmtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/testkernel"
)

func TestInitrdIsNewcCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	build := func() []byte {
		r := NewInitrd()
		r.File("/init", 0o755, []byte("#!/bin/sh\n"))
		r.File("etc/deep/dir/file", 0o600, []byte("12345")) // parents added
		r.Symlink("/bin/sh", "busybox")
		var b bytes.Buffer
		if _, err := r.WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	a := build()
	if !bytes.Equal(a, build()) {
		t.Fatal("two archives of the same entries differ")
	}
	if len(a)%4 != 0 {
		t.Fatalf("archive length %d is not a multiple of 4", len(a))
	}
	cmd := exec.Command("cpio", "-it", "--quiet")
	cmd.Stdin = bytes.NewReader(a)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	want := "dev\nproc\nsys\ntmp\ndev/console\ninit\netc\netc/deep\netc/deep/dir\netc/deep/dir/file\nbin\nbin/sh\n"
	if string(out) != want {
		t.Fatalf("cpio -t lists\n%s\nwant\n%s", out, want)
	}
	dir := t.TempDir()
	cmd = exec.Command("cpio", "-id", "--quiet", "--no-absolute-filenames", "init", "etc/deep/dir/file", "bin/sh")
	cmd.Dir, cmd.Stdin = dir, bytes.NewReader(a)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/deep/dir/file")); string(b) != "12345" {
		t.Errorf("extracted file holds %q", b)
	}
	if fi, err := os.Stat(filepath.Join(dir, "init")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("extracted init: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "bin/sh")); l != "busybox" {
		t.Errorf("extracted link points to %q", l)
	}
}

func TestModulesLoadOrder(t *testing.T) {
	root := t.TempDir()
	k := &KernelTree{testkernel.Tree{Version: "6.12.0-test", ModulesDir: filepath.Join(root, "lib/modules/6.12.0-test")}}
	dep := "kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz\n" +
		"kernel/fs/jbd2/jbd2.ko.xz:\nkernel/fs/mbcache.ko.xz:\nkernel/lib/crc16.ko.xz:\n" +
		"kernel/crypto/crc32c_generic.ko.xz:\nkernel/drivers/block/virtio_blk.ko.xz:\n"
	for _, l := range strings.Split(strings.TrimSpace(dep), "\n") {
		mod, _, _ := strings.Cut(l, ":")
		p := filepath.Join(k.ModulesDir, mod)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(mod), 0o644)
	}
	os.WriteFile(filepath.Join(k.ModulesDir, "modules.dep"), []byte(dep), 0o644)

	got, err := NewInitrd().Modules(k, "virtio-blk", "crc32c_generic", "ext4", "jbd2")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range []string{"drivers/block/virtio_blk", "crypto/crc32c_generic", "fs/jbd2/jbd2", "fs/mbcache", "lib/crc16", "fs/ext4/ext4"} {
		want = append(want, "/lib/modules/6.12.0-test/kernel/"+m+".ko.xz")
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("load order\n%v\nwant\n%v", got, want)
	}
	if _, err := NewInitrd().Modules(k, "erofs"); err == nil || !strings.Contains(err.Error(), "erofs") {
		t.Errorf("unknown module: err = %v", err)
	}
}

func TestExt4Helpers(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (e2fsprogs)", tool)
		}
	}
	data := strings.Repeat("0123456789abcdef", 700) // 11200 bytes: 3 blocks
	img := MakeExt4(t, "8M", map[string]string{"a/b.txt": data, "small": "x"}, true)
	if got, err := ReadFileFromExt4(img, "/a/b.txt"); err != nil || string(got) != data {
		t.Fatalf("ReadFileFromExt4: %d bytes, %v", len(got), err)
	}
	if _, err := ReadFileFromExt4(img, "/missing"); err == nil {
		t.Error("ReadFileFromExt4 of a missing file succeeded")
	}
	if out, err := Debugfs(img, "features"); err != nil || !strings.Contains(out, "verity") {
		t.Errorf("features: %q, %v", out, err)
	}
	blocks, err := DataBlocks(img, "/a/b.txt")
	if err != nil || len(blocks) != 3 {
		t.Fatalf("DataBlocks: %v, %v", blocks, err)
	}
	off := blocks[2]*ExtBlockSize + 5
	if err := FlipByte(img, off); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFileFromExt4(img, "/a/b.txt")
	if err != nil {
		t.Fatal(err)
	}
	if i := 2*ExtBlockSize + 5; got[i] != data[i]^0xff || string(got[:i]) != data[:i] || string(got[i+1:]) != data[i+1:] {
		t.Errorf("FlipByte at block %d changed the file wrongly", blocks[2])
	}
}

// offlineApt puts failing apt-cache and apt-get first in PATH, as on a
// machine without the Debian archive.
func offlineApt(t *testing.T) {
	bin := t.TempDir()
	for _, tool := range []string{"apt-cache", "apt-get"} {
		script := "#!/bin/sh\necho \"E: " + tool + " cannot reach the archive\" >&2\nexit 100\n"
		if err := os.WriteFile(filepath.Join(bin, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func TestKernelOfflineWithoutCacheSkips(t *testing.T) {
	offlineApt(t)
	tree, skip, err := setupKernel(t.TempDir(), t.Logf)
	if err != nil || tree != nil {
		t.Fatalf("got tree %v, err %v; want a skip", tree, err)
	}
	for _, want := range []string{"apt-cache show linux-image-6.12-amd64", "apt-get update failed", "cannot reach the archive"} {
		if !strings.Contains(skip, want) {
			t.Errorf("skip reason %q does not mention %q", skip, want)
		}
	}
}

func TestKernelOfflineUsesCache(t *testing.T) {
	if _, err := exec.LookPath("depmod"); err != nil {
		t.Skip("depmod not installed (kmod)")
	}
	offlineApt(t)
	cache := t.TempDir()
	root := filepath.Join(cache, "root-6.12.1-1")
	mods := filepath.Join(root, "lib/modules/6.12.1-test")
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	os.MkdirAll(mods, 0o755)
	os.WriteFile(filepath.Join(root, "boot/vmlinuz-6.12.1-test"), nil, 0o644)
	os.WriteFile(filepath.Join(mods, "modules.builtin"), nil, 0o644) // what marks a module directory
	tree, skip, err := setupKernel(cache, t.Logf)
	if err != nil || skip != "" {
		t.Fatalf("skip %q, err %v", skip, err)
	}
	want := KernelTree{testkernel.Tree{Root: root, Version: "6.12.1-test", Vmlinuz: filepath.Join(root, "boot/vmlinuz-6.12.1-test"), ModulesDir: mods, PackageVersion: "6.12.1-1"}}
	if *tree != want {
		t.Errorf("got %+v\nwant %+v", *tree, want)
	}
	if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err != nil {
		t.Errorf("depmod did not run: %v", err)
	}
}

func TestPrintable(t *testing.T) {
	in := "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r\nProbing EDD... ok\x1bc\x1b[?7l\x1b[2Jsmoke:\tup\x00\n"
	if got, want := printable(in), "SeaBIOS\r\nProbing EDD... oksmoke:\tup\n"; got != want {
		t.Errorf("printable = %q, want %q", got, want)
	}
}
