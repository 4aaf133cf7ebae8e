package oci

import (
	"archive/tar"
	"bytes"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// entry is one tar entry of a test layer.
type entry struct {
	name   string
	typ    byte
	mode   int64
	body   string
	link   string
	xattrs map[string]string
	mtime  int64
	uid    int
}

var t0 = time.Unix(1700000000, 123456789)

func tarOf(t testing.TB, entries []entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Uid: e.uid,
			ModTime: t0.Add(time.Duration(e.mtime) * time.Second), Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeChar {
			h.Devmajor, h.Devminor = 1, 3 // not 0/0, an overlayfs whiteout
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return b.Bytes()
}

type compression int

const (
	plain compression = iota
	gz
	zst
)

func compress(t testing.TB, data []byte, c compression) []byte {
	t.Helper()
	var b bytes.Buffer
	switch c {
	case plain:
		return data
	case gz:
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	case zst:
		w, _ := zstd.NewWriter(&b)
		w.Write(data)
		w.Close()
	}
	return b.Bytes()
}

func layerOf(t testing.TB, entries []entry, c compression) v1.Layer {
	t.Helper()
	data := compress(t, tarOf(t, entries), c)
	mt := map[compression]types.MediaType{plain: types.OCIUncompressedLayer, gz: types.OCILayer, zst: types.OCILayerZStd}[c]
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, tarball.WithMediaType(mt))
	if err != nil {
		t.Fatal(err)
	}
	if c == plain {
		// tarball compresses plain input; keep the layer as it is.
		return &rawLayer{Layer: l, data: data, mt: mt}
	}
	return l
}

// rawLayer serves an uncompressed tar as its own compressed form.
type rawLayer struct {
	v1.Layer
	data []byte
	mt   types.MediaType
}

func (r *rawLayer) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(r.data))
	return h, err
}
func (r *rawLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(r.data)), nil
}
func (r *rawLayer) Size() (int64, error)                { return int64(len(r.data)), nil }
func (r *rawLayer) MediaType() (types.MediaType, error) { return r.mt, nil }

func imageOf(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: "amd64", Created: v1.Time{Time: t0.UTC().Truncate(time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// writeLayoutDir writes img to a new OCI layout directory under tag.
func writeLayoutDir(t testing.TB, img v1.Image, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{refNameKey: tag})); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newRepo(t testing.TB) *repo.Repo {
	t.Helper()
	path := filepath.Join(t.TempDir(), "composefs")
	if err := repo.Init(path, repo.InitOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(path, repo.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func big(s string) string {
	for len(s) < 300 {
		s += s
	}
	return s
}

// The test image: three layers, gzip, zstd and plain, with whiteouts, an
// opaque directory, hard links within a layer and to a lower layer, a
// directory a layer only implies, xattrs. flatTar is what extracting them
// in order gives, written out by hand.
func testLayers() [][]entry {
	return [][]entry{{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/", typ: tar.TypeDir},
		{name: "etc/hostname", body: "one\n"},
		{name: "etc/big.conf", body: big("old config\n"), mtime: 1},
		{name: "etc/link.conf", typ: tar.TypeLink, link: "etc/big.conf"},
		{name: "usr/", typ: tar.TypeDir, mode: 0o755, mtime: 5},
		{name: "usr/bin/", typ: tar.TypeDir},
		{name: "usr/bin/tool", mode: 0o755, body: big("#!tool\n"), xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
		{name: "usr/share/", typ: tar.TypeDir},
		{name: "usr/share/doc/", typ: tar.TypeDir},
		{name: "usr/share/doc/a/", typ: tar.TypeDir},
		{name: "usr/share/doc/a/readme", body: big("a readme\n")},
		{name: "usr/share/doc/b/", typ: tar.TypeDir},
		{name: "usr/share/doc/b/readme", body: "b\n"},
		{name: "opt/", typ: tar.TypeDir},
		{name: "opt/old/", typ: tar.TypeDir},
		{name: "opt/old/file", body: big("old file\n")},
		{name: "var/", typ: tar.TypeDir, mode: 0o755},
		{name: "var/keep", body: big("keep?\n")},
		{name: "var/lib/", typ: tar.TypeDir},
		{name: "dev/", typ: tar.TypeDir},
		{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
		{name: "run/", typ: tar.TypeDir},
		{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
		{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
	}, {
		// No "usr/" entry: usr keeps layer 1's metadata.
		{name: "etc/", typ: tar.TypeDir, mtime: 10},
		{name: "etc/.wh.hostname", body: ""},
		{name: "etc/big.conf", body: big("new config\n"), mtime: 11},
		{name: "usr/bin/tool2", typ: tar.TypeLink, link: "usr/bin/tool"},
		{name: "usr/share/doc/", typ: tar.TypeDir, mtime: 12},
		{name: "usr/share/doc/.wh..wh..opq", body: ""},
		{name: "usr/share/doc/c/", typ: tar.TypeDir},
		{name: "usr/share/doc/c/readme", body: big("c readme\n")},
		{name: "opt/.wh.old", body: ""},
		{name: "opt/new/", typ: tar.TypeDir},
		{name: "opt/new/.wh.nothing", body: ""},
		{name: "opt/new/file", body: big("new file\n")},
	}, {
		{name: "etc/hostname", body: "three\n", mtime: 20},
		{name: "var/", typ: tar.TypeDir, mode: 0o700, mtime: 21, uid: 7},
		{name: "var/.wh.keep", body: ""},
		{name: "var/lib/data", body: big("data\n"), xattrs: map[string]string{"user.origin": "layer 3"}},
	}}
}

func flatEntries() []entry {
	return []entry{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "dev/", typ: tar.TypeDir},
		{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
		{name: "etc/", typ: tar.TypeDir, mtime: 10},
		{name: "etc/big.conf", body: big("new config\n"), mtime: 11},
		{name: "etc/hostname", body: "three\n", mtime: 20},
		{name: "etc/link.conf", body: big("old config\n"), mtime: 1},
		{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
		{name: "opt/", typ: tar.TypeDir},
		{name: "opt/new/", typ: tar.TypeDir},
		{name: "opt/new/file", body: big("new file\n")},
		{name: "run/", typ: tar.TypeDir},
		{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
		{name: "usr/", typ: tar.TypeDir, mode: 0o755, mtime: 5},
		{name: "usr/bin/", typ: tar.TypeDir},
		{name: "usr/bin/tool", mode: 0o755, body: big("#!tool\n"), xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
		{name: "usr/bin/tool2", typ: tar.TypeLink, link: "usr/bin/tool"},
		{name: "usr/share/", typ: tar.TypeDir},
		{name: "usr/share/doc/", typ: tar.TypeDir, mtime: 12},
		{name: "usr/share/doc/c/", typ: tar.TypeDir},
		{name: "usr/share/doc/c/readme", body: big("c readme\n")},
		{name: "var/", typ: tar.TypeDir, mode: 0o700, mtime: 21, uid: 7},
		{name: "var/lib/", typ: tar.TypeDir},
		{name: "var/lib/data", body: big("data\n"), xattrs: map[string]string{"user.origin": "layer 3"}},
	}
}

func testImage(t testing.TB) v1.Image {
	ls := testLayers()
	return imageOf(t, layerOf(t, ls[0], gz), layerOf(t, ls[1], zst), layerOf(t, ls[2], plain))
}

// flatImage commits the flattened tree directly (from a tar) and returns
// the composefs image digest.
func flatImage(t testing.TB, entries []entry) string {
	t.Helper()
	r := newRepo(t)
	res, err := r.CommitTar(bytes.NewReader(tarOf(t, entries)), "flat", repo.CommitOptions{Branch: "flat"})
	if err != nil {
		t.Fatal(err)
	}
	return res.Image.String()
}
