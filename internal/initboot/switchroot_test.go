package initboot

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func mkfiles(t *testing.T, root string, files ...string) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(root, f)
		if strings.HasSuffix(f, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func listTree(t *testing.T, root string) []string {
	var out []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if p != root {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// TestRemoveContents is switch root's freeing of the initramfs on a
// temporary directory: everything goes except what is mounted, which is
// not entered. Mounting needs root; without it only the deletion itself is
// tested.
func TestRemoveContents(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	mkfiles(t, outside, "precious.txt")
	mkfiles(t, root, "init", "usr/lib/modules/6.12/cfs-load.list", "usr/lib/modules/6.12/kernel/fs/ext4.ko.xz",
		"dev/", "proc/", "sysroot/", "newroot/", "bound/", "deep/a/b/c/d.txt")
	if err := os.Symlink(outside, filepath.Join(root, "lib")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr/lib", filepath.Join(root, "lib2")); err != nil {
		t.Fatal(err)
	}
	canMount := os.Geteuid() == 0
	if canMount {
		// A tmpfs (another device) and a bind mount of the same file
		// system (same device: only the mount-root check protects it).
		if err := unix.Mount("tmpfs", filepath.Join(root, "newroot"), "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(filepath.Join(root, "newroot"), unix.MNT_DETACH) })
		mkfiles(t, filepath.Join(root, "newroot"), "sbin/init", "etc/os-release")
		if err := unix.Mount(outside, filepath.Join(root, "bound"), "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(filepath.Join(root, "bound"), unix.MNT_DETACH) })
	}

	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		t.Fatal(err)
	}
	n, err := removeContents(root, st.Dev)
	if err != nil {
		t.Fatal(err)
	}
	got := listTree(t, root)
	want := []string{}
	if canMount {
		want = []string{"bound", "bound/precious.txt", "newroot", "newroot/etc", "newroot/etc/os-release", "newroot/sbin", "newroot/sbin/init"}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("left behind %v, want %v (removed %d)", got, want, n)
	}
	if _, err := os.Stat(filepath.Join(outside, "precious.txt")); err != nil {
		t.Errorf("a symlink was followed out of the tree: %v", err)
	}
}

func TestCheckInit(t *testing.T) {
	root := t.TempDir()
	mkfiles(t, root, "usr/lib/systemd/systemd", "usr/bin/notexec", "etc/")
	os.Chmod(filepath.Join(root, "usr/lib/systemd/systemd"), 0o755)
	os.MkdirAll(filepath.Join(root, "sbin"), 0o755)
	// Absolute, as distributions ship it: it must resolve inside root,
	// not in the initramfs.
	os.Symlink("/usr/lib/systemd/systemd", filepath.Join(root, "sbin/init"))
	os.Symlink("/nonexistent", filepath.Join(root, "sbin/broken"))

	if err := checkInit(root, "/sbin/init"); err != nil {
		t.Errorf("/sbin/init -> systemd: %v", err)
	}
	for init, want := range map[string]string{
		"/sbin/broken":     "the image has no init program /sbin/broken",
		"/sbin/nothing":    "the image has no init program /sbin/nothing",
		"/usr/bin/notexec": "is not an executable file",
		"/etc":             "is not an executable file",
	} {
		if err := checkInit(root, init); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", init, err, want)
		}
	}
}
