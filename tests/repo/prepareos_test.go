package repo

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// osTree writes a small distribution-like tree: what commit --prepare-os
// changes.
func osTree(t *testing.T, root string) {
	t.Helper()
	for _, d := range []string{"home", "srv", "mnt", "opt", "tmp", "usr/bin", "usr/local/bin", "usr/lib/tmpfiles.d"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "root"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "root/.bashrc"), strings.Repeat("# root's shell setup\n", 5), 0o644)
	writeFile(t, filepath.Join(root, "etc/fstab"), "UUID=0f00 / ext4 errors=remount-ro 0 1\n", 0o644)
	writeFile(t, filepath.Join(root, "var/lib/dpkg/status"), "Package: base-files\nStatus: install ok installed\n", 0o644)
	writeFile(t, filepath.Join(root, "usr/lib/tmpfiles.d/home.conf"), "Q /home 0755 - - -\nq /srv 0755 - - -\n", 0o644)
	writeFile(t, filepath.Join(root, "usr/bin/true"), strings.Repeat("\x7fELF", 40), 0o755)
	setAllTimes(t, root, 1700000000)
}

// TestCommitPrepareOS: --prepare-os changes the committed tree, never the
// source, from a directory, a tar stream and a dump, and a prepared tree
// prepared again is the same image.
func TestCommitPrepareOS(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "tree")
	osTree(t, src)
	before := snapshot(t, src)

	r := e.run("commit", "--branch", "os", "--prepare-os", src)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	_, img := parseCommit(t, r.stdout)
	if !strings.Contains(r.stderr, "warning: /etc/fstab: commented out the entry for / (\"UUID=0f00 / ext4") {
		t.Errorf("no warning about the fstab entry for /:\n%s", r.stderr)
	}
	// Into an empty repository every object is new, those Prepare wrote
	// too.
	var objects, fresh int
	for _, line := range strings.Split(r.stderr, "\n") {
		if i := strings.Index(line, " objects ("); i > 0 {
			fmt.Sscanf(line[strings.LastIndex(line[:i], " ")+1:], "%d objects (%d new)", &objects, &fresh)
		}
	}
	if objects == 0 || objects != fresh {
		t.Errorf("first commit: %d objects, %d new, want all new:\n%s", objects, fresh, r.stderr)
	}
	if after := snapshot(t, src); after != before {
		t.Errorf("commit --prepare-os changed the source:\n%s\n---\n%s", before, after)
	}

	links := map[string]string{}
	for _, ent := range e.ls("os", "/") {
		if ent.Type == "symlink" {
			links[ent.Path] = ent.Target
		}
	}
	for path, target := range map[string]string{"/home": "var/home", "/root": "var/roothome", "/srv": "var/srv",
		"/opt": "var/opt", "/mnt": "var/mnt", "/media": "run/media"} {
		if links[path] != target {
			t.Errorf("ls os /: %s links to %q, want %q", path, links[path], target)
		}
	}
	if ents := e.ls("os", "/usr/local"); len(ents) != 1 || ents[0].Target != "../var/usrlocal" {
		t.Errorf("ls os /usr/local: %+v", ents)
	}
	if ents := e.ls("os", "/var/lib/dpkg"); len(ents) != 1 || ents[0].Target != "../../usr/lib/sysimage/dpkg" {
		t.Errorf("ls os /var/lib/dpkg: %+v", ents)
	}
	if got := e.ok("cat", "os", "/usr/share/factory/var/roothome/.bashrc"); got != strings.Repeat("# root's shell setup\n", 5) {
		t.Errorf("factory copy of /root/.bashrc: %q", got)
	}
	if got := e.ok("cat", "os", "/usr/lib/sysimage/dpkg/status"); !strings.HasPrefix(got, "Package: base-files") {
		t.Errorf("moved dpkg status: %q", got)
	}
	fstab := e.ok("cat", "os", "/etc/fstab")
	if !strings.Contains(fstab, "#UUID=0f00 / ext4") || !strings.Contains(fstab, "\ntmpfs /tmp tmpfs ") {
		t.Errorf("fstab:\n%s", fstab)
	}
	if got := e.ok("cat", "os", "/usr/lib/tmpfiles.d/cfs-deploy-os.conf"); !strings.Contains(got, "C /var/roothome - - - - /usr/share/factory/var/roothome\n") {
		t.Errorf("cfs-deploy-os.conf:\n%s", got)
	}
	if ents := e.ls("os", "/usr/lib/systemd/system-generators/cfs-deploy-generator"); len(ents) != 1 || ents[0].Mode != "0755" {
		t.Errorf("generator: %+v", ents)
	}

	// Without the option the tree is committed as it is.
	e.commit("plain", src)
	if ents := e.ls("plain", "/home"); len(ents) != 0 {
		t.Errorf("plain commit: /home is not an empty directory: %+v", ents)
	}

	// From a tar stream: the same preparation.
	tarFile := filepath.Join(t.TempDir(), "tree.tar")
	if out, err := exec.Command("tar", "--format=pax", "-C", src, "-cf", tarFile, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	tarSum := snapshot(t, tarFile)
	e.commit("os-tar", "", "--prepare-os", "--from-tar", tarFile)
	if ents := e.ls("os-tar", "/root"); len(ents) != 1 || ents[0].Target != "var/roothome" {
		t.Errorf("tar commit: /root: %+v", ents)
	}
	if snapshot(t, tarFile) != tarSum {
		t.Error("commit --from-tar --prepare-os changed the tar file")
	}

	// The dump of the prepared image, prepared again: the same image.
	out, err := exec.Command(bin, "composefs-info", "dump", e.imageObject(img)).Output()
	if err != nil {
		t.Fatalf("composefs-info dump: %v", err)
	}
	dump := filepath.Join(t.TempDir(), "os.dump")
	if err := os.WriteFile(dump, out, 0o644); err != nil {
		t.Fatal(err)
	}
	r = e.run("commit", "--branch", "again", "--prepare-os", "--from-dump", dump)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	if _, again := parseCommit(t, r.stdout); again != img {
		t.Errorf("preparing the prepared tree gave image %s, want the same %s", again, img)
	}
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("preparing the prepared tree warned:\n%s", r.stderr)
	}
}

// TestCommitPrepareOSError: a tree that cannot be prepared is refused with
// the path and the problem, and the branch does not move.
func TestCommitPrepareOSError(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "tree")
	osTree(t, src)
	if err := os.Remove(filepath.Join(src, "home")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "home"), "not a directory\n", 0o644)
	r := e.fails("commit", "--branch", "os", "--prepare-os", src)
	if !strings.Contains(r.stderr, "/home is a regular file") {
		t.Errorf("error does not name /home and the problem:\n%s", r.stderr)
	}
	if e.tip("os") != "" {
		t.Error("a failed commit moved the branch")
	}
}
