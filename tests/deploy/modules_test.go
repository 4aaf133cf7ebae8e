package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRolloutModules: --modules replaces the default set, --module adds to
// it, [deploy] modules in config.toml means what --modules does, each set
// gets an initramfs of its own, and a module the kernel lacks fails the
// rollout with its name and the kernel's.
func TestRolloutModules(t *testing.T) {
	h := newHost(t)
	h.commit("1")
	initramfsOf := func(stdout string) string {
		t.Helper()
		for _, l := range strings.Split(stdout, "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "initramfs" {
				return f[1]
			}
		}
		t.Fatalf("no initramfs line in:\n%s", stdout)
		return ""
	}
	rollout := func(args ...string) (string, string) {
		t.Helper()
		r := h.run(append(append([]string{"rollout"}, args...), "os")...)
		if r.code != 0 {
			t.Fatalf("%v", r)
		}
		return initramfsOf(r.stdout), r.stderr
	}
	def, stderr := rollout()
	if !strings.Contains(stderr, "modules for ") {
		t.Errorf("rollout does not say what the module set is for:\n%s", stderr)
	}
	ext4, stderr := rollout("--modules", "ext4")
	if ext4 == def || !strings.Contains(stderr, "5 modules for the modules given") {
		t.Errorf("--modules ext4: %s (default %s)\n%s", ext4, def, stderr)
	}
	plus, stderr := rollout("--modules", "ext4,erofs", "--module", "loop")
	if plus == ext4 || plus == def || !strings.Contains(stderr, "modules for the modules given") {
		t.Errorf("--modules ext4,erofs --module loop: %s\n%s", plus, stderr)
	}

	must(t, os.WriteFile(h.config, []byte("[deploy]\nmodules = [\"ext4\"]\n"), 0o644))
	if fromConfig, stderr := rollout(); fromConfig != ext4 || !strings.Contains(stderr, "reused") {
		t.Errorf("[deploy] modules = [\"ext4\"]: %s, want %s reused\n%s", fromConfig, ext4, stderr)
	}
	// --modules wins over the configuration; --module adds to it.
	if withFlag, _ := rollout("--modules", "ext4,erofs", "--module", "loop"); withFlag != plus {
		t.Errorf("--modules over the configuration: %s, want %s", withFlag, plus)
	}
	if added, _ := rollout("--module", "erofs"); added == ext4 || added == plus {
		t.Errorf("config set plus --module erofs: %s", added)
	}
	must(t, os.WriteFile(h.config, nil, 0o644))

	for _, args := range [][]string{{"--modules", "ext4,no_such_mod"}, {"--module", "no_such_mod"}} {
		r := h.run(append(append([]string{"rollout"}, args...), "os")...)
		if r.code != 1 || !strings.Contains(r.stderr, "no_such_mod") || !strings.Contains(r.stderr, h.kver) {
			t.Errorf("%v: want exit 1 naming no_such_mod and kernel %s\n%v", args, h.kver, r)
		}
	}
	if r := h.run("rollout", "--modules", "ext4 xfs", "os"); r.code != 2 {
		t.Errorf("--modules \"ext4 xfs\": want a usage error\n%v", r)
	}
}

// TestInitramfsModules runs "cfs-deploy initramfs" with the module flags.
func TestInitramfsModules(t *testing.T) {
	h := newHost(t)
	out := filepath.Join(t.TempDir(), "initramfs.img")
	build := func(args ...string) result {
		t.Helper()
		return h.run(append([]string{"initramfs", "--root", h.src, "--cfs-init", h.init, "-o", out}, args...)...)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "modules for any ext4, xfs or btrfs root"},
		{[]string{"--modules", "ext4"}, "5 modules for the modules given"},
		{[]string{"--modules", "ext4", "--module", "loop"}, "6 modules for the modules given"},
		{[]string{"--modules", ""}, "0 modules for the modules given"},
		{[]string{"--sysroot", h.sysroot}, " root on "},
	} {
		r := build(c.args...)
		if r.code != 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: want %q\n%v", c.args, c.want, r)
		}
	}
	r := build("--modules", "ext4,no_such_mod")
	if r.code != 1 || !strings.Contains(r.stderr, "no module no_such_mod") || !strings.Contains(r.stderr, "kernel "+h.kver) {
		t.Errorf("unknown module: %v", r)
	}
}
