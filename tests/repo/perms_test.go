package repo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
	"golang.org/x/sys/unix"
)

// asNobody runs a command as user nobody and returns (the start of) its
// output and whether it succeeded.
func asNobody(t *testing.T, name string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if len(out) > 200 {
		out = out[:200]
	}
	return string(out), err == nil
}

func modeOf(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// openUp makes dir and its parents up to the system's temporary directory
// traversable by everyone, as a repository's parent on a real system
// usually is (/, /sysroot, a 0755 mount point).
func openUp(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestObjectsPrivate: a repository created in an existing world-readable
// directory must not expose the content of a committed 0600 file to other
// users; init and fsck say that the top directory is open.
func TestObjectsPrivate(t *testing.T) {
	needRoot(t)
	sysroot := filepath.Join(t.TempDir(), "sysroot")
	repoDir := filepath.Join(sysroot, "composefs")
	if err := os.MkdirAll(repoDir, 0o755); err != nil {
		t.Fatal(err)
	}
	openUp(t, repoDir)
	e := &env{t: t, sysroot: sysroot, repo: repoDir, config: filepath.Join(t.TempDir(), "config.toml")}
	writeFile(t, e.config, "", 0o644)
	r := e.run("init", "--insecure")
	if r.code != 0 || !strings.Contains(r.stderr, "warning") || !strings.Contains(r.stderr, "0755") {
		t.Errorf("init in a 0755 directory: %v\nwant a warning that it is open", r)
	}
	src := filepath.Join(t.TempDir(), "src")
	secret := strings.Repeat("root:$6$secret-hash:19000:0:99999:7:::\n", 10)
	writeFile(t, filepath.Join(src, "etc", "shadow"), secret, 0o600)
	e.commit("main", src)

	obj := e.objectOf("main", "/etc/shadow")
	if out, ok := asNobody(t, "cat", obj); ok || strings.Contains(out, "secret-hash") {
		t.Errorf("user nobody read the object of a 0600 file: %q", out)
	}
	for _, d := range []string{filepath.Join(e.repo, "objects"), filepath.Dir(obj)} {
		if m := modeOf(t, d); m != 0o700 {
			t.Errorf("%s: mode %04o, want 0700", d, m)
		}
	}
	rep, fr := e.fsck()
	if len(rep.Problems) != 0 || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], repoDir) {
		t.Errorf("fsck of a repository in an open directory: %+v %v\nwant a warning and no problem", rep, fr)
	}
	if r := e.run("fsck"); r.code != 0 || !strings.Contains(r.stderr, "warning: "+repoDir) {
		t.Errorf("fsck: %v\nwant the warning on stderr", r)
	}

	// A repository whose objects/ an earlier version made 0755 is
	// tightened when it is next opened for writing.
	if err := os.Chmod(filepath.Join(e.repo, "objects"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "etc", "shadow"), secret+"more\n", 0o600)
	e.commit("main", src)
	if m := modeOf(t, filepath.Join(e.repo, "objects")); m != 0o700 {
		t.Errorf("objects/ of an old repository after a commit: mode %04o, want 0700", m)
	}
}

// TestFailedInitLeavesNothing: a secure init on a filesystem without
// fs-verity fails; it must remove every directory it created, the parents
// of the repository included, and none that existed before.
func TestFailedInitLeavesNothing(t *testing.T) {
	base := t.TempDir()
	e := &env{t: t, repo: filepath.Join(base, "new", "parents", "composefs"), config: filepath.Join(t.TempDir(), "config.toml")}
	writeFile(t, e.config, "", 0o644)
	r := e.run("init")
	if r.code == 0 {
		t.Skip("this filesystem has fs-verity: secure init does not fail here")
	}
	if ents, err := os.ReadDir(base); err != nil || len(ents) != 0 {
		t.Errorf("failed init left %v in %s (%v)", ents, base, err)
	}
	// An existing directory is kept, and emptied of what init made.
	existing := filepath.Join(base, "existing")
	if err := os.Mkdir(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	e.repo = existing
	e.fails("init")
	if ents, err := os.ReadDir(existing); err != nil || len(ents) != 0 {
		t.Errorf("failed init in an existing directory left %v (%v)", ents, err)
	}
}

// TestMountNoSuidNoDev: `cfs-deploy mount` of a commit holding a
// setuid-root program and a device node must not give other users root
// or the device: nosuid and nodev unless --suid and --dev ask for them.
func TestMountNoSuidNoDev(t *testing.T) {
	needMount(t)
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "placeholder"), "", 0o644)
	data, err := os.ReadFile(gobuild.T(t, "./tests/repo/testdata/euid"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "euid"), string(data), 0o755)
	if err := unix.Chmod(filepath.Join(src, "euid"), 0o4755); err != nil { // os.Chmod takes os.ModeSetuid
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	e.commit("main", src)

	check := func(mnt string, suid, dev bool) {
		t.Helper()
		openUp(t, filepath.Dir(mnt))
		out, ok := asNobody(t, filepath.Join(mnt, "euid"))
		wantUID := "65534"
		if suid {
			wantUID = "0"
		}
		if !ok || strings.TrimSpace(out) != wantUID {
			t.Errorf("setuid-root program run by nobody from the mount (suid %v): %q, want euid %s", suid, out, wantUID)
		}
		f, err := os.OpenFile(filepath.Join(mnt, "null"), os.O_WRONLY, 0)
		if err == nil {
			f.Close()
		}
		if (err == nil) != dev {
			t.Errorf("opening the device node (dev %v): %v", dev, err)
		}
	}
	check(e.mount("main"), false, false)
	check(e.mount("main", "--suid", "--dev"), true, true)
}
