package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/testkernel"
)

// CacheDir holds the downloaded kernel package and its extracted tree (see
// internal/testkernel for its layout), shared with the initramfs builder's
// and kmod's tests. The VM tests add depmod's output to the tree.
const CacheDir = testkernel.CacheDir

// RequiredEnv, set to 1, turns the skips for a missing environment (no root,
// no QEMU, no network to fetch the kernel) into failures. CI sets it so that
// the suite cannot pass by skipping.
const RequiredEnv = "CFS_DEPLOY_VM_REQUIRED"

// KernelTree is an extracted Debian kernel package whose ModulesDir holds
// modules.dep.
type KernelTree struct {
	testkernel.Tree
}

var kernelOnce struct {
	sync.Mutex
	tree *KernelTree
	skip string // why the environment cannot provide a kernel
	err  error
}

// Kernel returns Debian's 6.12 kernel, downloading and extracting it into
// CacheDir the first time. Without network access to the Debian archive, and
// no kernel in the cache, the test is skipped with the reason (or fails, with
// RequiredEnv=1).
func Kernel(t testing.TB) *KernelTree {
	t.Helper()
	Require(t)
	kernelOnce.Lock()
	defer kernelOnce.Unlock()
	if kernelOnce.tree == nil && kernelOnce.skip == "" && kernelOnce.err == nil {
		start := time.Now()
		kernelOnce.tree, kernelOnce.skip, kernelOnce.err = setupKernel(CacheDir, t.Logf)
		if kernelOnce.tree != nil {
			t.Logf("kernel %s from %s (%v)", kernelOnce.tree.Version, kernelOnce.tree.Root, time.Since(start).Round(time.Millisecond))
		}
	}
	switch {
	case kernelOnce.err != nil:
		t.Fatalf("kernel: %v", kernelOnce.err)
	case kernelOnce.skip != "":
		skipOrFail(t, "kernel: "+kernelOnce.skip)
	}
	return kernelOnce.tree
}

// setupKernel returns the current kernel from cache with modules.dep, or
// the reason the environment cannot provide one (skip), or an error that
// is a bug or a broken cache.
func setupKernel(cache string, logf func(string, ...any)) (tree *KernelTree, skip string, err error) {
	if _, err := exec.LookPath("depmod"); err != nil {
		return nil, "depmod not found in PATH (install package kmod)", nil
	}
	kt, skip, err := testkernel.Fetch(cache, logf)
	if kt == nil {
		return nil, skip, err
	}
	if err := addModulesDep(cache, kt); err != nil {
		return nil, "", err
	}
	return &KernelTree{Tree: *kt}, "", nil
}

// addModulesDep runs depmod in the tree unless it has modules.dep already
// (a Debian package ships none; the initrd builder needs it to order
// modules).
func addModulesDep(cache string, kt *testkernel.Tree) error {
	unlock, err := testkernel.Lock(cache)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(kt.ModulesDir, "modules.dep")); err == nil {
		return nil
	}
	if out, err := exec.Command("depmod", "-b", kt.Root, kt.Version).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod -b %s %s: %v: %s", kt.Root, kt.Version, err, bytes.TrimSpace(out))
	}
	return nil
}
