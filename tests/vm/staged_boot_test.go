package vm_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/vm/vmtest"
)

// testStaged stages an update on the running system and shuts down: the
// init runs finalize, which merges /etc again, so an edit made after
// staging is in the new deployment. Then an update is staged and the
// machine killed before finalize: the old default boots, and cleanup
// removes what the staged deployment left.
func (f *fixture) testStaged(t *testing.T) {
	in := f.installed(t, "verity")
	disk := f.diskCopy(t, in)
	dir := t.TempDir()
	for _, v := range []string{"v2", "v3"} {
		f.copyTree(t, filepath.Join(dir, v))
		must(t, os.WriteFile(filepath.Join(dir, v, "usr/share/test/version"), []byte(v+"\n"), 0o644))
	}
	status := statusScript
	write := func(name, script string) {
		must(t, os.WriteFile(filepath.Join(dir, name), []byte(script), 0o644))
	}
	write("s1.sh", "set -e\n"+
		"cfs-deploy commit --branch os --version 2 /mnt/v2\n"+
		"cfs-deploy rollout --stage os\n"+
		"echo 'edited after staging' > /etc/cfstest/late-edit\n"+
		status("staged"))
	write("s2.sh", "set -e\n"+
		"echo \"late-edit: $(cat /etc/cfstest/late-edit)\"\n"+
		status("status")+
		"cfs-deploy commit --branch os --version 3 /mnt/v3\n"+
		"cfs-deploy rollout --stage os\n"+
		"sync\n"+
		"echo @@KILL-NOW\n"+
		"sleep 600\n")
	write("s3.sh", "set -e\n"+status("status")+"cfs-deploy cleanup\n")
	steps := vmtest.MakeExt4FromDir(t, "160M", dir, false)

	// Boot 1: v1 stages v2, the admin edits /etc, the init finalizes.
	out := f.runStep(t, disk, steps, "s1.sh", "cfstest.finalize")
	st := statusOf(t, out, "staged")
	if len(st) != 2 || !st[1].Staged || st[0].Image != in.image || !st[0].Default {
		t.Fatalf("status with a staged deployment: %+v", st)
	}
	v2 := st[1].Image
	if got := consoleLine(out, "cfstest: finalize exit="); got != "cfstest: finalize exit=0" {
		t.Fatalf("finalize at shutdown: %s\n%s", got, out)
	}

	// Boot 2: v2, with the late edit; then v3 is staged and the machine
	// dies before finalize.
	vm, _ := f.startStep(t, disk, steps, "s2.sh", "cfstest.finalize")
	if _, err := vm.WaitFor("@@KILL-NOW"); err != nil {
		t.Fatal(err)
	}
	vm.Kill()
	out = vm.Output()
	checkImageBooted(t, out, v2)
	if !strings.Contains(runLines(out), "late-edit: edited after staging") {
		t.Errorf("the edit made after staging is not in v2's /etc:\n%s", runLines(out))
	}
	st = statusOf(t, out, "status")
	if len(st) != 2 || st[0].Image != v2 || !st[0].Booted || st[1].Image != in.image {
		t.Errorf("status on v2: %+v", st)
	}

	// Boot 3: the power cut forgot the staged v3; v2 is still the default.
	out = f.runStep(t, disk, steps, "s3.sh")
	checkImageBooted(t, out, v2)
	st = statusOf(t, out, "status")
	if len(st) != 2 || st[0].Image != v2 || st[1].Image != in.image {
		t.Errorf("status after a crash before finalize: %+v", st)
	}
	if !strings.Contains(runLines(out), "cleanup: 1 state directories") {
		t.Errorf("cleanup did not remove the staged deployment's state:\n%s", runLines(out))
	}
}
