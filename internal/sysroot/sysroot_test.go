package sysroot

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestReadStateFile(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "f")
	if err := os.WriteFile(regular, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadStateFile(regular, 5); err != nil || string(b) != "hello" {
		t.Errorf("regular file: %q %v", b, err)
	}
	if _, err := ReadStateFile(regular, 4); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("too big: %v", err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(regular, link)
	if _, err := ReadStateFile(link, 100); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("symlink: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStateFile(fifo, 100); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("fifo: %v", err)
	}
	if _, err := ReadStateFile(filepath.Join(dir, "none"), 100); !os.IsNotExist(err) {
		t.Errorf("missing: %v", err)
	}
}

func TestCheckDirNoSymlinks(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "a/b/c"), 0o755)
	os.Symlink("b", filepath.Join(root, "a/l"))
	os.WriteFile(filepath.Join(root, "a/f"), nil, 0o644)
	for rel, want := range map[string]string{
		"a/b/c":   "",
		"a/l/c":   "symbolic link",
		"a/f":     "not a directory",
		"a/../..": "leaves",
		"a/none":  "no such file",
	} {
		err := CheckDirNoSymlinks(root, rel)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: %v, want %q", rel, err, want)
		}
	}
}

func TestBootDirRecord(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "state"), 0o755)
	for boot, rec := range map[string]string{
		filepath.Join(root, "boot"): "boot\n",
		"/efi":                      "/efi\n",
		filepath.Dir(root):          filepath.Dir(root) + "\n",
	} {
		got := BootDirRecord(root, boot)
		if got != rec {
			t.Errorf("BootDirRecord(%s) = %q, want %q", boot, got, rec)
		}
		os.WriteFile(filepath.Join(root, BootFile), []byte(got), 0o644)
		if back, err := ReadBootDir(root); err != nil || back != boot {
			t.Errorf("ReadBootDir after %q: %q %v", got, back, err)
		}
	}
}

func TestCheckStateroot(t *testing.T) {
	for _, ok := range []string{"default", "debian-12", "a.b_c"} {
		if err := CheckStateroot(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".x", "-x", "a/b", "a b", strings.Repeat("x", 65)} {
		if err := CheckStateroot(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
