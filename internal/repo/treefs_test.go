package repo

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// treeFSRepo commits a tree with every kind of entry TreeFS must handle
// and returns the repository (insecure) and the commit's tree view. With
// broken set it adds a dangling link and a link loop, which fstest.TestFS
// cannot take (it opens every entry, as it would on os.DirFS).
func treeFSRepo(t *testing.T, broken bool) (*Repo, *TreeFS, string) {
	t.Helper()
	base := t.TempDir()
	src := filepath.Join(base, "src")
	bigText := strings.Repeat("module bytes 0123456789\n", 2000) // external object
	files := map[string]string{
		"etc/hostname":                          "box\n",
		"etc/big.conf":                          bigText,
		"usr/lib/os-release":                    "PRETTY_NAME=\"Test OS\"\n",
		"usr/lib/modules/6.1.0/kernel/a":        strings.Repeat("a", 100),
		"usr/lib/modules/6.1.0/modules.builtin": "kernel/fs/ext4/ext4.ko\n",
		"empty":                                 "",
	}
	for p, c := range files {
		full := filepath.Join(src, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("usr/lib", filepath.Join(src, "lib")))
	must(os.Symlink("../usr/lib/os-release", filepath.Join(src, "etc/os-release")))
	must(os.Symlink("/usr/lib/modules", filepath.Join(src, "etc/abs-modules")))
	must(os.Link(filepath.Join(src, "etc/big.conf"), filepath.Join(src, "etc/big-link.conf")))
	must(syscall.Mkfifo(filepath.Join(src, "etc/fifo"), 0o600))
	must(os.Chmod(filepath.Join(src, "etc/hostname"), fs.ModeSetuid|0o755))
	if broken {
		must(os.Symlink("nowhere", filepath.Join(src, "etc/dangling")))
		must(os.Symlink("loop-b", filepath.Join(src, "etc/loop-a")))
		must(os.Symlink("loop-a", filepath.Join(src, "etc/loop-b")))
	}

	dir := filepath.Join(base, "repo")
	must(Init(dir, InitOptions{Insecure: true}))
	r, err := Open(dir, OpenOptions{})
	must(err)
	t.Cleanup(func() { r.Close() })
	res, err := r.CommitDir(src, CommitOptions{Branch: "main"})
	must(err)
	_, root, err := r.CommitTree(res.ID)
	must(err)
	return r, r.TreeFS(root), bigText
}

func TestTreeFSConformance(t *testing.T) {
	_, tfs, _ := treeFSRepo(t, false)
	if err := fstest.TestFS(tfs, "etc/hostname", "etc/big.conf", "etc/big-link.conf",
		"usr/lib/os-release", "usr/lib/modules/6.1.0/kernel/a", "empty", "etc/fifo"); err != nil {
		t.Fatal(err)
	}
	// A sub-tree view, as the initramfs builder uses it, passes too.
	sub, err := fs.Sub(tfs, "usr/lib/modules/6.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := fstest.TestFS(sub, "kernel/a", "modules.builtin"); err != nil {
		t.Fatal(err)
	}
}

func TestTreeFSContentAndLinks(t *testing.T) {
	_, tfs, bigText := treeFSRepo(t, true)
	for name, want := range map[string]string{
		"etc/big.conf":                   bigText,
		"etc/big-link.conf":              bigText,
		"etc/os-release":                 "PRETTY_NAME=\"Test OS\"\n",
		"lib/modules/6.1.0/kernel/a":     strings.Repeat("a", 100),
		"etc/abs-modules/6.1.0/kernel/a": strings.Repeat("a", 100),
		"empty":                          "",
	} {
		got, err := fs.ReadFile(tfs, name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if string(got) != want {
			t.Errorf("%s: got %d bytes, want %d", name, len(got), len(want))
		}
	}
	if tgt, err := tfs.ReadLink("etc/os-release"); err != nil || tgt != "../usr/lib/os-release" {
		t.Errorf("ReadLink = %q, %v", tgt, err)
	}
	if fi, err := tfs.Lstat("lib"); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("Lstat(lib) = %v, %v", fi, err)
	}
	if fi, err := tfs.Stat("lib"); err != nil || !fi.IsDir() {
		t.Errorf("Stat(lib) = %v, %v", fi, err)
	}
	if fi, err := tfs.Stat("etc/hostname"); err != nil || fi.Mode() != fs.ModeSetuid|0o755 {
		t.Errorf("Stat(etc/hostname) mode = %v, %v", fi.Mode(), err)
	}
	if _, err := tfs.Open("etc/dangling"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dangling link: %v, want not-exist", err)
	}
	if _, err := tfs.Open("etc/loop-a"); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("link loop: %v, want ELOOP", err)
	}
	if _, err := tfs.Open("etc/hostname/x"); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("path through a file: %v, want ENOTDIR", err)
	}
	if _, err := tfs.Open("/etc/hostname"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("absolute name: %v, want invalid", err)
	}
}

// In an insecure repository nothing but TreeFS stands between a damaged
// object and its reader.
func TestTreeFSDetectsDamagedObject(t *testing.T) {
	r, tfs, bigText := treeFSRepo(t, false)
	n, err := tfs.Node("etc/big.conf")
	if err != nil {
		t.Fatal(err)
	}
	d := n.Target().Digest
	p := r.ObjectPath(d)
	bad := []byte(bigText)
	bad[len(bad)-2] ^= 1
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = fs.ReadFile(tfs, "etc/big.conf")
	var mm *verity.MismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("damaged object read: %v, want a digest mismatch", err)
	}
	// A truncated object is refused when it is opened.
	if err := os.WriteFile(p, bad[:10], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tfs.Open("etc/big.conf"); err == nil || !strings.Contains(err.Error(), "has 10 bytes") {
		t.Fatalf("truncated object open: %v", err)
	}
	// Reading by offset is not checked, but works.
	if err := os.WriteFile(p, []byte(bigText), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := tfs.Open("etc/big.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 5)
	if _, err := f.(io.ReaderAt).ReadAt(buf, 7); err != nil || string(buf) != bigText[7:12] {
		t.Fatalf("ReadAt = %q, %v", buf, err)
	}
}
