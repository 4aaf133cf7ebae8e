package deploy

import (
	"os"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/osprep"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
)

// TestRolloutWarnsUnprepared: rollout of a stock tree (writable
// directories in the image, fstab mounting /) works but warns; the same
// tree committed with the osprep hook rolls out without that warning.
func TestRolloutWarnsUnprepared(t *testing.T) {
	f := newFixture(t)
	f.write("etc/fstab", "UUID=0f3c55aa-1b2c-4d5e-8f90-a1b2c3d4e5f6 / ext4 errors=remount-ro 0 1\n", 0o644)
	f.must(os.MkdirAll(f.path("home"), 0o755))
	f.must(os.MkdirAll(f.path("root"), 0o700))
	f.commit("os", "1.0")
	res, err := f.rollout("os")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "does not look prepared as an OS") ||
		!strings.Contains(res.Warnings[0], "/home, /root: directories of the read-only image") ||
		!strings.Contains(res.Warnings[0], "/etc/fstab has an entry for / (\"UUID=0f3c55aa") {
		t.Errorf("warnings %q", res.Warnings)
	}

	_, err = f.r.CommitDir(f.src, repo.CommitOptions{Branch: "prepared", Prepare: func(root *erofs.Node) ([]string, error) {
		rep, err := osprep.Prepare(root, f.r)
		if err != nil {
			return nil, err
		}
		return rep.Warnings, nil
	}})
	f.must(err)
	if res, err = f.rollout("prepared"); err != nil {
		t.Fatal(err)
	}
	for _, w := range res.Warnings {
		if strings.Contains(w, "prepared") {
			t.Errorf("rollout of a prepared tree warns: %q", w)
		}
	}
}
