package osprep_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/osprep"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
)

// BenchmarkPrepareDebian times Prepare on the Debian tree the VM tests
// cache (skipped without it): what --prepare-os adds to a commit, reading
// and storing included. Each round prepares a fresh copy of the tree, read
// back from the committed image outside the timer.
func BenchmarkPrepareDebian(b *testing.B) {
	found, _ := filepath.Glob("/var/cache/cfs-deploy-vm/debian-bookworm-*.tar")
	if len(found) == 0 {
		b.Skip("no cached Debian tree in /var/cache/cfs-deploy-vm")
	}
	dir := b.TempDir()
	if err := repo.Init(dir, repo.InitOptions{Insecure: true}); err != nil {
		b.Fatal(err)
	}
	r, err := repo.Open(dir, repo.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	f, err := os.Open(found[0])
	if err != nil {
		b.Fatal(err)
	}
	res, err := r.CommitTar(f, found[0], repo.CommitOptions{Branch: "debian"})
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		img, err := r.ReadImage(res.Image)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := osprep.Prepare(img.Root, r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(res.Commit.Stats.Entries), "entries")
}
