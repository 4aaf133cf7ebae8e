package vm_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/vm/vmtest"
)

// testLifecycle is the update cycle on a running system, as an operator
// runs it: on the booted v1 the admin edits /etc, commits v2 and rolls it
// out; v2 boots with the edits merged; a kernel argument is added to v1
// and v2 is rolled back; v1 boots with it; v3 is rolled out and retention
// removes v2; v3 boots. Every boot is of the entry the boot loader would
// pick (vmtest.ReadBootEntry sorts as systemd-boot does), and every step
// inside the VM is cfs-deploy itself.
func (f *fixture) testLifecycle(t *testing.T) {
	in := f.installed(t, "verity")
	disk := f.diskCopy(t, in)
	steps := f.lifecycleDisk(t)

	// Boot 1: v1. Local /etc edits, then v2 committed and rolled out.
	out := f.runStep(t, disk, steps, "step1.sh")
	st := statusOf(t, out, "status")
	if len(st) != 2 || !st[0].Default || st[0].Booted || !st[1].Booted || !st[1].Rollback || st[1].Image != in.image {
		t.Fatalf("status after rolling out v2 on v1: %+v", st)
	}
	v2 := st[0].Image
	if st[0].Version != "2" || !strings.Contains(out, "etc merge: 1 modified, 1 added, 1 deleted kept") {
		t.Errorf("rollout of v2: version %q; merge line missing:\n%s", st[0].Version, runLines(out))
	}

	// Boot 2: v2 boots with the admin's edits and the new defaults.
	out = f.runStep(t, disk, steps, "step2.sh")
	checkImageBooted(t, out, v2)
	for _, want := range []string{
		`config: setting=local`,                                            // locally modified: kept
		`local-added: added by admin`,                                      // locally added: carried over
		`to-delete: gone`,                                                  // locally deleted: stays deleted
		`untouched: default of version 2`,                                  // untouched: follows the image
		`new-default: new in version 2`,                                    // new in the image
		`M cfstest/config`, `A cfstest/local-added`, `D cfstest/to-delete`, // etc-diff
	} {
		if !strings.Contains(runLines(out), want) {
			t.Errorf("boot of v2: no %q in:\n%s", want, runLines(out))
		}
	}
	st = statusOf(t, out, "status")
	if len(st) != 2 || st[0].Image != v2 || !st[0].Booted || !st[0].Default || st[1].Image != in.image || !st[1].Rollback {
		t.Errorf("status on v2: %+v", st)
	}
	st = statusOf(t, out, "after-rollback")
	if len(st) != 2 || st[0].Image != in.image || !st[0].Default || st[1].Image != v2 || !st[1].Booted ||
		!strings.Contains(st[0].Kargs, "cfstest.karg=seen") || strings.Contains(st[1].Kargs, "cfstest.karg") {
		t.Errorf("status after kargs and rollback: %+v", st)
	}

	// Boot 3: v1 again, with the new kernel argument; v3 rolled out, and
	// retention removes v2 with the initramfs only it used.
	v2Initramfs := bootFileOf(t, out, "v2-initramfs")
	out = f.runStep(t, disk, steps, "step3.sh")
	checkImageBooted(t, out, in.image)
	if !strings.Contains(consoleLine(out, "cfstest: cmdline "), "cfstest.karg=seen") {
		t.Errorf("the kargs edit is not on v1's command line: %s", consoleLine(out, "cfstest: cmdline "))
	}
	st = statusOf(t, out, "before")
	if len(st) != 2 || st[0].Image != in.image || !st[0].Booted || st[1].Image != v2 {
		t.Errorf("status on v1 after rollback: %+v", st)
	}
	st = statusOf(t, out, "after")
	if len(st) != 2 || st[1].Image != in.image || !st[1].Booted || st[0].Image == v2 || st[1].Image == v2 {
		t.Errorf("status after rolling out v3: %+v (v2 %s must be gone)", st, v2)
	}
	v3 := st[0].Image
	if !strings.Contains(runLines(out), "retention: removed deployment "+v2[:12]) {
		t.Errorf("no retention line for v2:\n%s", runLines(out))
	}
	entries, err := vmtest.ListExt4Dir(disk, "/boot/loader/entries")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name, v2[:12]) {
			t.Errorf("v2's entry %s is still on the disk", e.Name)
		}
	}
	if _, err := vmtest.ReadFileFromExt4(disk, "/boot/cfs-deploy/"+v2Initramfs); err == nil {
		t.Errorf("v2's own initramfs %s is still on the disk", v2Initramfs)
	}

	// Boot 4: v3, which inherited v1's kernel arguments.
	out = f.runStep(t, disk, steps, "step4.sh")
	checkImageBooted(t, out, v3)
	st = statusOf(t, out, "status")
	if len(st) != 2 || st[0].Image != v3 || !st[0].Booted || st[1].Image != in.image || !st[1].Rollback {
		t.Errorf("status on v3: %+v", st)
	}
	if !strings.Contains(consoleLine(out, "cfstest: cmdline "), "cfstest.karg=seen") {
		t.Errorf("v3 did not inherit v1's kernel arguments: %s", consoleLine(out, "cfstest: cmdline "))
	}
}

// lifecycleDisk makes the second disk: the step scripts and the trees of
// v2 and v3. v2 changes an /etc default the admin never touches, adds
// one, and carries one more kernel module (so its initramfs is its own);
// v3 is v1 with another file.
func (f *fixture) lifecycleDisk(t *testing.T) string {
	dir := t.TempDir()
	for _, v := range []string{"v2", "v3"} {
		f.copyTree(t, filepath.Join(dir, v))
	}
	write := func(p, content string) {
		t.Helper()
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("v2/etc/cfstest/untouched", "default of version 2\n")
	write("v2/etc/cfstest/new-default", "new in version 2\n")
	write("v2/usr/share/test/version", "2\n")
	write("v3/usr/share/test/version", "3\n")
	mods, err := f.k.ModuleFiles("isofs")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		b, err := os.ReadFile(filepath.Join(f.k.ModulesDir, m))
		if err != nil {
			t.Fatal(err)
		}
		write(filepath.Join("v2/usr/lib/modules", f.k.Version, m), string(b))
	}
	if out, err := exec.Command("depmod", "-b", filepath.Join(dir, "v2"), f.k.Version).CombinedOutput(); err != nil {
		t.Fatalf("depmod: %v: %s", err, out)
	}

	status := statusScript
	write("step1.sh", "set -e\n"+
		"echo 'setting=local' > /etc/cfstest/config\n"+
		"echo 'added by admin' > /etc/cfstest/local-added\n"+
		"rm /etc/cfstest/to-delete\n"+
		"cfs-deploy commit --branch os --version 2 --subject 'version 2' /mnt/v2\n"+
		"cfs-deploy rollout os\n"+
		status("status"))
	write("step2.sh", "set -e\n"+
		"for f in config local-added to-delete untouched new-default; do echo \"$f: $(cat /etc/cfstest/$f 2>/dev/null || echo gone)\"; done\n"+
		"cfs-deploy etc-diff\n"+
		status("status")+
		"echo \"@@v2-initramfs $(grep '^initrd' /sysroot/boot/loader/entries/cfs-deploy-$(cat /proc/cmdline | tr ' ' '\\n' | grep '^composefs=' | sed 's/composefs=//' | head -c 12)*.conf | sed 's|.*/||')\"\n"+
		"cfs-deploy kargs --deployment 1 --append cfstest.karg=seen\n"+
		"cfs-deploy rollback\n"+
		status("after-rollback"))
	write("step3.sh", "set -e\n"+
		status("before")+
		"cfs-deploy commit --branch os --version 3 --subject 'version 3' /mnt/v3\n"+
		"cfs-deploy rollout os\n"+
		status("after")+
		"ls /sysroot/boot/cfs-deploy\n")
	write("step4.sh", "set -e\n"+status("status"))
	return vmtest.MakeExt4FromDir(t, "160M", dir, false)
}

// runStep boots the entry the boot loader would boot from disk, with the
// steps disk attached, runs one script and returns the console.
func (f *fixture) runStep(t *testing.T, disk, steps, script string, knobs ...string) string {
	t.Helper()
	vm, in := f.startStep(t, disk, steps, script, knobs...)
	out := f.waitDone(t, vm, in)
	if got := consoleLine(out, "cfstest: run exit="); got != "cfstest: run exit=0" {
		t.Fatalf("%s: %s\n%s", script, got, runLines(out))
	}
	return out
}

// startStep boots the default entry of disk running script, and returns
// the running VM.
func (f *fixture) startStep(t *testing.T, disk, steps, script string, knobs ...string) (*vmtest.VM, *install) {
	t.Helper()
	dir := t.TempDir()
	e, err := vmtest.ReadBootEntry(disk, "/boot", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: booting %s (order %v)", script, e.File, e.Order)
	vm := vmtest.Boot(t, vmtest.Config{
		Kernel:   e.Kernel,
		Initrd:   e.InitrdFile,
		Disks:    []string{disk, steps},
		Append:   strings.Join(append([]string{e.Options, "loglevel=4 cfs.reboot-delay=0 cfstest.run=" + script}, knobs...), " "),
		MemoryMB: 768,
		Timeout:  bootTimeout,
	})
	return vm, &install{entry: e}
}

// runLines returns what the step script printed.
func runLines(out string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(l, "cfstest: run| "); ok {
			b.WriteString(strings.TrimRight(rest, "\r"))
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// statusJSON is the part of `status --json` the scenario checks.
type statusJSON struct {
	Index    int    `json:"index"`
	Image    string `json:"image"`
	Version  string `json:"version"`
	Kargs    string `json:"kargs"`
	Booted   bool   `json:"booted"`
	Default  bool   `json:"default"`
	Rollback bool   `json:"rollback"`
	Bad      bool   `json:"bad"`
	Staged   bool   `json:"staged"`
	// TriesLeft is absent for an entry that is not counted.
	TriesLeft *int `json:"tries_left"`
}

// statusScript is a script line that prints status --json tagged for
// statusOf.
func statusScript(tag string) string { return taggedScript(tag, "cfs-deploy status --json") }

// taggedScript is a script line that runs command with its output between
// @@tag-begin and @@tag-end lines, for taggedOutput.
func taggedScript(tag, command string) string {
	return "echo @@" + tag + "-begin; " + command + "; echo @@" + tag + "-end\n"
}

// taggedOutput returns what the script printed between @@tag-begin and
// @@tag-end.
func taggedOutput(t *testing.T, out, tag string) string {
	t.Helper()
	lines := runLines(out)
	_, rest, ok := strings.Cut(lines, "@@"+tag+"-begin\n")
	body, _, ok2 := strings.Cut(rest, "@@"+tag+"-end")
	if !ok || !ok2 {
		t.Fatalf("no output tagged %q in:\n%s", tag, lines)
	}
	return body
}

// copyTree copies the test OS tree to dst, for a scenario to change.
func (f *fixture) copyTree(t *testing.T, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", f.tree, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", f.tree, dst, err, out)
	}
}

// statusOf parses the status --json output the script printed between
// @@tag-begin and @@tag-end.
func statusOf(t *testing.T, out, tag string) []statusJSON {
	t.Helper()
	body := taggedOutput(t, out, tag)
	var st struct {
		Deployments []statusJSON `json:"deployments"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("status %q: %v\n%s", tag, err, body)
	}
	return st.Deployments
}

// bootFileOf returns the value of a "@@tag VALUE" line of the script.
func bootFileOf(t *testing.T, out, tag string) string {
	t.Helper()
	for _, l := range strings.Split(runLines(out), "\n") {
		if v, ok := strings.CutPrefix(l, "@@"+tag+" "); ok && v != "" {
			return v
		}
	}
	t.Fatalf("no %s line", tag)
	return ""
}

func checkImageBooted(t *testing.T, out, image string) {
	t.Helper()
	// cfs-init's one line about the boot it lets go ahead names the
	// image, whatever the OS's init does afterwards.
	if line := consoleLine(out, "cfs-init: booting composefs image "); !strings.Contains(line, "image "+image+" ") {
		t.Fatalf("booted %q, want image %s", line, image)
	}
}
