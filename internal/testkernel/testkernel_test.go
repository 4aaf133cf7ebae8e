package testkernel

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseMetaDepends(t *testing.T) {
	show := "Package: linux-image-6.12-amd64\nVersion: 6.12.117-1~deb12u1\n" +
		"Depends: linux-image-6.12.117+deb12-amd64 (= 6.12.117-1~deb12u1)\nDescription: Linux 6.12\n"
	pkg, ver, ok := parseMetaDepends([]byte(show))
	if !ok || pkg != "linux-image-6.12.117+deb12-amd64" || ver != "6.12.117-1~deb12u1" {
		t.Errorf("got %q %q %v", pkg, ver, ok)
	}
	if _, _, ok := parseMetaDepends([]byte("Depends: linux-base\n")); ok {
		t.Error("accepted a Depends without a kernel")
	}
}

// fakeTree makes the files Open looks for under cache/name.
func fakeTree(t *testing.T, cache, name, kver, modules string, mtime time.Time) string {
	t.Helper()
	root := filepath.Join(cache, name)
	for _, file := range []string{"boot/vmlinuz-" + kver, modules + "/" + kver + "/modules.builtin"} {
		p := filepath.Join(root, file)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(root, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestNewest(t *testing.T) {
	cache := t.TempDir()
	if tree := Newest(cache); tree != nil {
		t.Fatalf("empty cache: %+v", tree)
	}
	base := time.Unix(1_700_000_000, 0)
	fakeTree(t, cache, "root-6.12.1-1", "6.12.1-amd64", "lib/modules", base)
	newer := fakeTree(t, cache, "root-6.12.2-1", "6.12.2-amd64", "usr/lib/modules", base.Add(time.Hour))
	fakeTree(t, cache, "root-6.12.3-1.tmp-123", "6.12.3-amd64", "lib/modules", base.Add(2*time.Hour))
	broken := fakeTree(t, cache, "root-6.12.4-1", "6.12.4-amd64", "lib/modules", base.Add(3*time.Hour))
	if err := os.Remove(filepath.Join(broken, "lib/modules/6.12.4-amd64/modules.builtin")); err != nil {
		t.Fatal(err)
	}

	want := Tree{Root: newer, Version: "6.12.2-amd64", Vmlinuz: filepath.Join(newer, "boot/vmlinuz-6.12.2-amd64"),
		ModulesDir: filepath.Join(newer, "usr/lib/modules/6.12.2-amd64"), PackageVersion: "6.12.2-1"}
	if got := Newest(cache); got == nil || *got != want {
		t.Errorf("Newest = %+v\nwant %+v", got, want)
	}
}
