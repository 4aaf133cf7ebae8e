package repo

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// debianTarball returns a Debian tree the VM tests cached, or skips: this
// test does not build one.
func debianTarball(t *testing.T) string {
	t.Helper()
	found, _ := filepath.Glob("/var/cache/cfs-deploy-vm/debian-bookworm-*.tar")
	if len(found) == 0 {
		t.Skip("no cached Debian tree in /var/cache/cfs-deploy-vm (the VM tests build one)")
	}
	return found[0]
}

// bootLikeScript stands in for the early boot of a prepared tree mounted
// read-only at $1: /var is a copy of the image's (what rollout seeds), /run
// and /tmp are tmpfs; then it runs what systemd would: the tree's
// tmpfiles.d configuration, and its cfs-deploy-generator under the tree's
// own /bin/sh with units where cfs-init writes them. It runs in a private
// mount namespace, so nothing outlives it.
const bootLikeScript = `set -e
M=$1 SEED=$2
cp -a "$M/var/." "$SEED/"
mount --bind "$SEED" "$M/var"
mount -t tmpfs tmpfs "$M/run"
mount -t tmpfs -o mode=1777 tmpfs "$M/tmp"
mkdir -p "$M/run/cfs-deploy/systemd/local-fs.target.requires" "$M/run/gen"
echo "[Mount]" > "$M/run/cfs-deploy/systemd/var.mount"
ln -s ../var.mount "$M/run/cfs-deploy/systemd/local-fs.target.requires/var.mount"
echo "== tmpfiles"
systemd-tmpfiles --root="$M" --create --remove --boot 2>&1 || echo "tmpfiles failed: $?"
echo "== generator"
chroot "$M" /usr/lib/systemd/system-generators/cfs-deploy-generator /run/gen /run/gen.early /run/gen.late 2>&1 || echo "generator failed: $?"
readlink "$M/run/gen/local-fs.target.requires/var.mount"
echo "== writable"
for d in root home srv opt mnt usr/local media tmp; do touch "$M/$d/written" 2>&1; done
echo "== seeded"
ls -A "$M/root" "$M/usr/local"
head -1 "$M/var/lib/dpkg/status"
`

// TestPreparedDebianBootsClean commits the cached Debian tree with
// --prepare-os, mounts the image read-only as cfs-init would, and runs
// systemd-tmpfiles and the generator over it: no errors, the linked
// directories writable and seeded, the units copied.
func TestPreparedDebianBootsClean(t *testing.T) {
	needMount(t)
	if _, err := exec.LookPath("systemd-tmpfiles"); err != nil {
		t.Skip("systemd-tmpfiles not installed")
	}
	tarball := debianTarball(t)
	e := newEnv(t)
	e.commit("debian", "", "--prepare-os", "--from-tar", tarball)
	mnt := e.mount("debian")
	out, err := exec.Command("unshare", "-m", "--propagation", "private",
		"sh", "-c", bootLikeScript, "sh", mnt, t.TempDir()).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := string(out)
	t.Logf("%s", got)
	section := func(name string) string {
		s := got[strings.Index(got, "== "+name+"\n")+len(name)+4:]
		if i := strings.Index(s, "== "); i >= 0 {
			s = s[:i]
		}
		return s
	}
	if s := section("tmpfiles"); s != "" {
		t.Errorf("systemd-tmpfiles on the prepared tree said:\n%s", s)
	}
	if s := section("generator"); s != "../var.mount\n" {
		t.Errorf("generator: %q, want the copied local-fs.target.requires link", s)
	}
	if s := section("writable"); s != "" {
		t.Errorf("linked directories not writable:\n%s", s)
	}
	s := section("seeded")
	for _, want := range []string{".bashrc", ".profile", "bin", "share", "Package: "} {
		if !strings.Contains(s, want) {
			t.Errorf("seeded content lacks %q:\n%s", want, s)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "run/gen")); err == nil {
		t.Error("the boot-like mounts leaked out of their namespace")
	}
}
