//go:build linux

package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// noDataOnlyLayers makes mount(2) refuse data-only layers ("::") with
// EINVAL, as overlayfs before Linux 6.5 does, for the rest of the test.
func noDataOnlyLayers(t *testing.T) {
	forceLegacy = true
	sysMount = func(src, target, fstype string, flags uintptr, data string) error {
		if strings.Contains(data, "::") {
			return unix.EINVAL
		}
		return unix.Mount(src, target, fstype, flags, data)
	}
	t.Cleanup(func() { forceLegacy, sysMount = false, unix.Mount })
}

// TestRequireVerityNeverOrdinaryLower: on a kernel without data-only
// layers, a mount that requires verity must fail rather than add the
// object directory as an ordinary lower layer, where a file planted in it
// at a tree path would show in the verified tree. An insecure mount may
// fall back, and says in its log which layout it got.
func TestRequireVerityNeverOrdinaryLower(t *testing.T) {
	requireRoot(t)
	fx := newFixture(t, "objects")
	if err := os.WriteFile(filepath.Join(fx.objects, "planted"), []byte("evil\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	noDataOnlyLayers(t)

	mnt := mountPoint(t)
	opts := fx.opts()
	opts.RequireVerity = true
	err := Mount(mnt, opts)
	if _, serr := os.Stat(filepath.Join(mnt, "planted")); serr == nil {
		t.Errorf("a file planted in the object directory shows in a verity=require mount")
	}
	if err == nil {
		unix.Unmount(mnt, 0)
		t.Fatal("Mount with RequireVerity succeeded without data-only layers")
	}
	if !errors.Is(err, ErrNoDataOnlyLayers) {
		t.Errorf("error %v does not wrap ErrNoDataOnlyLayers", err)
	}
	checkNoLeftovers(t, fx.image)

	// Insecure: the fallback is allowed and logged.
	var logged []string
	opts = fx.opts()
	opts.Logf = func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }
	mustMount(t, mnt, opts)
	if len(logged) != 1 || !strings.Contains(logged[0], "ordinary lower layer") {
		t.Errorf("insecure mount without data-only layers logged %q, want the layout", logged)
	}
	mustUnmount(t, mnt)

	// With data-only layers the log says so.
	forceLegacy, sysMount = false, unix.Mount
	logged = nil
	mustMount(t, mnt, opts)
	if len(logged) != 1 || !strings.Contains(logged[0], "data-only") {
		t.Errorf("insecure mount logged %q, want the data-only layout", logged)
	}
	mustUnmount(t, mnt)
}
