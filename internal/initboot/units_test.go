package initboot

import (
	"os/exec"
	"strings"
	"testing"
)

func TestUnitName(t *testing.T) {
	cases := map[string]string{
		"/":                       "-.mount",
		"/var":                    "var.mount",
		"/run/cfs-deploy/sysroot": `run-cfs\x2ddeploy-sysroot.mount`,
		"/var/lib/.hidden dir/":   `var-lib-.hidden\x20dir.mount`,
		"/.dot/ü":                 `\x2edot-\xc3\xbc.mount`,
	}
	for in, want := range cases {
		if got := unitName(in); got != want {
			t.Errorf("unitName(%q) = %q, want %q", in, got, want)
		}
		// systemd's own escaping agrees, where this host has it.
		if esc, err := exec.LookPath("systemd-escape"); err == nil {
			out, err := exec.Command(esc, "--path", "--suffix=mount", in).Output()
			if err != nil {
				t.Fatalf("systemd-escape %q: %v", in, err)
			}
			if s := strings.TrimSpace(string(out)); s != want {
				t.Errorf("systemd-escape --path %q = %q, want %q", in, s, want)
			}
		}
	}
}

func TestMountUnitText(t *testing.T) {
	u := mountUnit{What: "/run/cfs-deploy/sysroot/state/os/default/var", Where: "/var", Options: "bind", Stop: true, Description: "var"}
	txt := u.text()
	for _, want := range []string{"What=/run/cfs-deploy/sysroot/state/os/default/var\n", "Where=/var\n", "Options=bind\n"} {
		if !strings.Contains(txt, want) {
			t.Errorf("unit lacks %q:\n%s", want, txt)
		}
	}
	if strings.Contains(txt, "DefaultDependencies") || strings.Contains(txt, "Type=") {
		t.Errorf("a unit stopped at shutdown keeps the default dependencies and names no type it was not given:\n%s", txt)
	}
	u.Stop = false
	if !strings.Contains(u.text(), "DefaultDependencies=no\n") {
		t.Errorf("a unit kept till the end has default dependencies:\n%s", u.text())
	}
}

func TestBootUnits(t *testing.T) {
	img := &chosenImage{Rel: "composefs/images/ab"}
	dep := &deployment{Etc: "state/deploy/ab/etc", Var: "state/os/default/var", StateRoot: "default"}
	m := rootMounts{Device: "/dev/vda", FSType: "ext4", Physical: "/run/cfs-deploy/sysroot", Image: "/run/cfs-deploy/image"}
	names := func(us []mountUnit) (n []string) {
		for _, u := range us {
			n = append(n, u.name())
		}
		return n
	}
	if got := strings.Join(names(bootUnits(m, img, dep)), " "); got != `run-cfs\x2ddeploy-sysroot.mount run-cfs\x2ddeploy-image.mount etc.mount var.mount` {
		t.Errorf("units: %s", got)
	}
	// A unit without What= is refused by systemd, and var.mount, which
	// requires it, with it: no device, no unit.
	m.Device, m.SysrootBind = "", "/sysroot"
	if got := strings.Join(names(bootUnits(m, img, dep)), " "); got != `run-cfs\x2ddeploy-image.mount etc.mount var.mount sysroot.mount` {
		t.Errorf("units without a known device: %s", got)
	}
	if txt := (mountUnit{What: "/dev/disk/by-label/50%", Where: "/x", Description: "100%"}).text(); !strings.Contains(txt, "What=/dev/disk/by-label/50%%\n") || !strings.Contains(txt, "Description=100%%\n") {
		t.Errorf("%% is a systemd specifier and must be doubled:\n%s", txt)
	}
}
