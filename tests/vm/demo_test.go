package vm_test

import (
	"os"
	"strings"
	"testing"
)

// TestDemo is the README's main command (scripts/demo): build cfs-deploy
// and cfs-init, make a small OS tree, install it from inside a VM onto an
// ext4 disk with fs-verity (init, commit, rollout), then boot the disk's
// default boot entry and show what the booted system sees: the verified
// composefs root and cfs-init's record of the boot. It only runs when
// CFS_DEPLOY_DEMO=1, so that the suite does not boot the same thing twice.
func TestDemo(t *testing.T) {
	if os.Getenv("CFS_DEPLOY_DEMO") != "1" {
		t.Skip("set CFS_DEPLOY_DEMO=1 (scripts/demo does)")
	}
	f := newFixture(t)
	in := f.installed(t, "verity")
	t.Logf("installed: image %s", in.image)
	t.Logf("boot entry options: %s", in.entry.Options)
	vm := f.boot(t, f.diskCopy(t, in), in, "", "cfstest.read="+strings.Join(f.checkedFiles(), ","))
	out := f.waitDone(t, vm, in)
	root := mountLine(out, "/")
	if root == nil || root[2] != "overlay" || !hasOption(root[3], "verity=require") || !hasOption(root[3], "ro") {
		t.Fatalf("/ in the booted system is %v, want a read-only overlay with verity=require", root)
	}
	f.checkReads(t, out, f.checkedFiles())
	rec := bootRecordOf(t, vm.Output())
	t.Logf("booted system: / is %s", strings.Join(root, " "))
	if rec != nil {
		t.Logf("cfs-init booted image %s from %s (kernel-verified fs-verity: %v)", rec.Digest, rec.Device, rec.KernelVerity)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "cfs-init:") && strings.Contains(l, "verified") || strings.Contains(l, "cfstest: read ") {
			t.Log(strings.TrimSpace(l))
		}
	}
	f.logStats(t)
}
