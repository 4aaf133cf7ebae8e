package oci

import (
	"archive/tar"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/tests/registrytest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// gzipLayerOf writes the given directories of base (as paths under
// "go/") into a gzip tar layer in dir; edit, if set, changes one file's
// content on the way.
func gzipLayerOf(b *testing.B, dir, base string, subdirs []string, edit func(rel string, data []byte) []byte) v1.Layer {
	b.Helper()
	f, err := os.CreateTemp(dir, "layer-*.tar.gz")
	if err != nil {
		b.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	for _, sub := range subdirs {
		err := filepath.WalkDir(filepath.Join(base, sub), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(base, p)
			link := ""
			if d.Type()&fs.ModeSymlink != 0 {
				link, _ = os.Readlink(p)
			}
			h, err := tar.FileInfoHeader(info, link)
			if err != nil {
				return err
			}
			h.Name = "go/" + filepath.ToSlash(rel)
			h.Uname, h.Gname = "", ""
			if !d.Type().IsRegular() {
				return tw.WriteHeader(h)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if edit != nil {
				data = edit(rel, data)
			}
			h.Size = int64(len(data))
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			_, err = tw.Write(data)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	tw.Close()
	zw.Close()
	f.Close()
	l, err := tarball.LayerFromFile(f.Name(), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkPullChangedTopLayer pulls a 3-layer image made from /usr/local/go
// (src; pkg and bin; the rest), then a new tag whose top layer has one
// changed file, through a proxy that counts blob bytes. Run it with
// -benchtime 1x; bench/pull.sh does.
func BenchmarkPullChangedTopLayer(b *testing.B) {
	const base = "/usr/local/go"
	if _, err := os.Stat(filepath.Join(base, "src")); err != nil {
		b.Skip("no /usr/local/go")
	}
	reg := registrytest.Start(b)
	proxy := registrytest.NewProxy(b, reg)
	dir := b.TempDir()
	l1 := gzipLayerOf(b, dir, base, []string{"src"}, nil)
	l2 := gzipLayerOf(b, dir, base, []string{"pkg", "bin"}, nil)
	top := []string{"test", "api", "doc", "lib", "misc"}
	l3 := gzipLayerOf(b, dir, base, top, nil)
	changed := false
	l3b := gzipLayerOf(b, dir, base, top, func(rel string, data []byte) []byte {
		if !changed && filepath.Ext(rel) == ".go" {
			changed = true
			return append(data, "// changed\n"...)
		}
		return data
	})
	img1, img2 := imageOf(b, l1, l2, l3), imageOf(b, l1, l2, l3b)
	pushImage(b, reg.Host+"/bench/go:1", img1)
	pushImage(b, reg.Host+"/bench/go:2", img2)
	size := func(l v1.Layer) int64 { n, _ := l.Size(); return n }

	for b.Loop() {
		b.StopTimer()
		r := newRepo(b)
		if _, err := Pull(context.Background(), r, PullOptions{Ref: "docker://" + proxy.Host + "/bench/go:1", Branch: "os"}); err != nil {
			b.Fatal(err)
		}
		proxy.Blobs()
		b.StartTimer()
		start := time.Now()
		res, err := Pull(context.Background(), r, PullOptions{Ref: "docker://" + proxy.Host + "/bench/go:2", Branch: "os"})
		if err != nil {
			b.Fatal(err)
		}
		el := time.Since(start)
		b.StopTimer()
		var got int64
		blobs := proxy.Blobs()
		cfg, _ := img2.ConfigName()
		for d, n := range blobs {
			if d != cfg.String() {
				got += n
			}
		}
		b.ReportMetric(float64(got), "layer-bytes-downloaded")
		b.ReportMetric(float64(size(l3b)), "top-layer-bytes")
		b.ReportMetric(float64(size(l1)+size(l2)+size(l3b)), "image-layer-bytes")
		b.ReportMetric(float64(res.LayersFetched), "layers-downloaded")
		b.ReportMetric(el.Seconds(), "s/pull")
		b.StartTimer()
	}
}
