package pull

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/repo"
)

// BenchmarkPullGoRoot pulls a commit of /usr/local/go (about 14,000
// objects, 230 MB) from a Go static file server on 127.0.0.1 into an empty
// repository; bench/pull.sh compares the same with a local commit.
func BenchmarkPullGoRoot(b *testing.B) {
	const src = "/usr/local/go"
	if _, err := os.Stat(src); err != nil {
		b.Skip("no /usr/local/go")
	}
	dir := b.TempDir()
	remote := filepath.Join(dir, "remote")
	if err := repo.Init(remote, repo.InitOptions{Insecure: true}); err != nil {
		b.Fatal(err)
	}
	rr, err := repo.Open(remote, repo.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := rr.CommitDir(src, repo.CommitOptions{Branch: "main"}); err != nil {
		b.Fatal(err)
	}
	rr.Close()
	srv := httptest.NewServer(http.FileServer(http.Dir(remote)))
	defer srv.Close()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		local := filepath.Join(dir, "local")
		os.RemoveAll(local)
		if err := repo.Init(local, repo.InitOptions{Insecure: true}); err != nil {
			b.Fatal(err)
		}
		r, err := repo.Open(local, repo.OpenOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := Pull(context.Background(), r, Options{Remote: srv.URL, Branch: "main"})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(res.Fetched), "objects")
		b.ReportMetric(float64(res.Bytes)/(1<<20), "MiB")
		r.Close()
		b.StartTimer()
	}
}
