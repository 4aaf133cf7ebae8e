package repo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadOnlyRepository: read commands work on a repository on a
// read-only mount (a root mounted ro), and commits fail with a clear
// error instead of half-writing.
func TestReadOnlyRepository(t *testing.T) {
	needMount(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "motd"), []byte(strings.Repeat("hello\n", 40)), 0o644)
	commit, _ := e.commit("os", src)
	// The lock file is created on first use; make sure a missing one is
	// not needed on a read-only filesystem either.
	os.Remove(filepath.Join(e.repo, "lock"))

	ro := filepath.Join(t.TempDir(), "ro")
	os.MkdirAll(ro, 0o755)
	for _, args := range [][]string{{"--bind", e.sysroot, ro}, {"-o", "remount,ro,bind", ro}} {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("umount", "-l", ro).Run() })
	roEnv := *e
	roEnv.sysroot, roEnv.repo = ro, filepath.Join(ro, "composefs")

	if out := roEnv.ok("log", "os"); !strings.Contains(out, commit) {
		t.Fatalf("log on a read-only repository:\n%s", out)
	}
	if out := roEnv.ok("cat", "os", "/etc/motd"); !strings.HasPrefix(out, "hello\n") {
		t.Fatalf("cat: %q", out)
	}
	roEnv.ok("fsck")
	r := roEnv.fails("commit", "--branch", "os", src)
	if !strings.Contains(r.stderr, "read-only") {
		t.Fatalf("commit to a read-only repository: %s", r.stderr)
	}
	if tip := e.tip("os"); tip != commit {
		t.Fatalf("branch moved to %s", tip)
	}
}
