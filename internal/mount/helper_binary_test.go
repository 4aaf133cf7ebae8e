//go:build linux

package mount

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
)

// buildHelper builds cmd/cfs-deploy and links it as mount.composefs, the
// name main dispatches on.
func buildHelper(t *testing.T) string {
	t.Helper()
	helper, err := gobuild.Alias(gobuild.T(t, "./cmd/cfs-deploy"), "mount.composefs")
	if err != nil {
		t.Fatal(err)
	}
	return helper
}

// runHelper runs the helper and returns its combined output and exit code.
func runHelper(t *testing.T, helper string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(helper, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("run %s: %v", helper, err)
	return "", -1
}

func TestHelperBinary(t *testing.T) {
	requireRoot(t)
	helper := buildHelper(t)
	fx := newFixture(t, "objects")

	out, code := runHelper(t, helper, "--help")
	if code != 0 || !strings.Contains(out, "Usage: mount.composefs") || !strings.Contains(out, "basedir=") {
		t.Errorf("--help: exit %d, output:\n%s", code, out)
	}

	// The way mount(8) calls a helper: operands first, then its flags.
	mnt := mountPoint(t)
	out, code = runHelper(t, helper, fx.image, mnt, "-n", "-v", "-o", "rw,basedir="+fx.objects)
	if code != 0 {
		t.Fatalf("mount: exit %d, output:\n%s", code, out)
	}
	if !strings.Contains(out, "mounted "+fx.image) {
		t.Errorf("-v printed %q", out)
	}
	fx.check(t, mnt, view{})
	mustUnmount(t, mnt)

	// -f checks and mounts nothing.
	mnt = mountPoint(t)
	if out, code = runHelper(t, helper, "-f", "-t", "composefs", "-o", "basedir="+fx.objects, fx.image, mnt); code != 0 {
		t.Errorf("-f: exit %d, output:\n%s", code, out)
	}
	if m := mountsAt(t, mnt); len(m) != 0 {
		t.Errorf("-f mounted something: %+v", m)
	}

	for _, c := range []struct {
		args     []string
		wantCode int
		wantMsg  string
	}{
		{[]string{fx.image, mnt, "-o", "basedir=" + fx.objects + ",frobnicate"}, 2, `unknown option "frobnicate"`},
		{[]string{fx.image, mnt}, 2, "basedir= is required"},
		{[]string{fx.image, mnt, "-o", "basedir=" + fx.objects + ",digest=" + fx.digest.String()}, 1, "no fs-verity"},
		{[]string{fx.objects, mnt, "-o", "basedir=" + fx.objects}, 1, "not a composefs image"},
	} {
		out, code := runHelper(t, helper, c.args...)
		if code != c.wantCode || !strings.Contains(out, c.wantMsg) {
			t.Errorf("%q: exit %d, output:\n%s\nwant exit %d and %q", c.args, code, out, c.wantCode, c.wantMsg)
		}
		if m := mountsAt(t, mnt); len(m) != 0 {
			t.Errorf("%q mounted something: %+v", c.args, m)
		}
	}
	checkNoLeftovers(t, fx.image)
}

func TestMain(m *testing.M) {
	code := m.Run()
	gobuild.Cleanup()
	os.Exit(code)
}
