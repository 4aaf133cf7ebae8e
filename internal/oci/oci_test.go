package oci

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

func pull(t *testing.T, r *repo.Repo, ref, branch string) *PullResult {
	t.Helper()
	res, err := Pull(context.Background(), r, PullOptions{Ref: ref, Branch: branch})
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	return res
}

func fsckClean(t *testing.T, r *repo.Repo) {
	t.Helper()
	rep, err := r.Fsck(repo.FsckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		t.Errorf("fsck: %s: %s", p.Path, p.What)
	}
}

// dumpOf prints an image's tree, to show how two differ.
func dumpOf(t *testing.T, r *repo.Repo, image string) string {
	d, err := verity.ParseDigest(image)
	if err != nil {
		t.Fatal(err)
	}
	img, err := r.ReadImage(d)
	if err != nil {
		return err.Error()
	}
	var b bytes.Buffer
	erofs.WriteDump(&b, img.Root, erofs.DumpPrintOptions{})
	return b.String()
}

func TestPullLayoutAppliesLayers(t *testing.T) {
	want := flatImage(t, flatEntries())
	dir := writeLayoutDir(t, testImage(t), "v1")
	r := newRepo(t)
	res := pull(t, r, "oci:"+dir+":v1", "os")
	if res.Image != want {
		fr := newRepo(t)
		fres, _ := fr.CommitTar(bytes.NewReader(tarOf(t, flatEntries())), "flat", repo.CommitOptions{Branch: "flat"})
		t.Fatalf("image %s, flattened tree committed directly %s\npulled:\n%s\nflat:\n%s", res.Image, want,
			dumpOf(t, r, res.Image), dumpOf(t, fr, fres.Image.String()))
	}
	if res.Layers != 3 || res.LayersFetched != 3 {
		t.Errorf("layers %d, fetched %d", res.Layers, res.LayersFetched)
	}
	// The commit records where it came from.
	id, _ := r.Branch("os")
	c, err := r.ReadCommit(id)
	if err != nil {
		t.Fatal(err)
	}
	if c.OCI == nil || c.OCI.Manifest != res.Manifest || c.OCI.Reference != "oci:"+dir+":v1" || len(c.OCI.Layers) != 3 {
		t.Errorf("commit's oci record %+v", c.OCI)
	}
	fsckClean(t, r)

	// Pulling again: nothing to do. A new tag with the same layers is
	// built from the kept layer trees without reading a layer.
	if res := pull(t, r, "oci:"+dir+":v1", "os"); !res.UpToDate {
		t.Errorf("second pull: %+v", res)
	}
	res2 := pull(t, r, "oci:"+dir+":v1", "other")
	if res2.LayersFetched != 0 || res2.Image != want {
		t.Errorf("pull onto another branch: fetched %d layers, image %s", res2.LayersFetched, res2.Image)
	}
	fsckClean(t, r)
}

func TestPullRefusesCorruptLayer(t *testing.T) {
	img := testImage(t)
	dir := writeLayoutDir(t, img, "v1")
	layers, _ := img.Layers()
	d, _ := layers[1].Digest()
	blob := filepath.Join(dir, "blobs", d.Algorithm, d.Hex)
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x10
	os.WriteFile(blob, data, 0o644)
	r := newRepo(t)
	_, err = Pull(context.Background(), r, PullOptions{Ref: "oci:" + dir, Branch: "os"})
	if err == nil || !strings.Contains(err.Error(), d.String()) {
		t.Fatalf("corrupt layer: %v", err)
	}
	t.Log(err)
	if _, err := r.Branch("os"); !errors.Is(err, repo.ErrNoBranch) {
		t.Fatal("branch created from a corrupt image")
	}
	// The good layers are kept for the next try; the bad one is not.
	names, _ := r.NamedImages(layerRefPrefix)
	if len(names) != 2 || cachedLayer(r, d) != nil {
		t.Errorf("kept layers after a failed pull: %v", names)
	}
	fsckClean(t, r)
}

func TestPushPullRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a tree with devices and owners")
	}
	r := newRepo(t)
	src := t.TempDir()
	// A tree from a real directory with what a layer must carry.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(src, "usr/bin"), 0o755)
	must(os.WriteFile(filepath.Join(src, "usr/bin/tool"), []byte(big("tool")), 0o4755))
	must(os.Link(filepath.Join(src, "usr/bin/tool"), filepath.Join(src, "usr/bin/alias")))
	must(os.WriteFile(filepath.Join(src, "small"), []byte("x"), 0o600))
	must(os.WriteFile(filepath.Join(src, "empty"), nil, 0o644))
	must(os.Symlink("/usr/bin/tool", filepath.Join(src, "abs-link")))
	must(os.Lchown(filepath.Join(src, "small"), 123, 456))
	must(setxattr(filepath.Join(src, "small"), "user.note", "with\x00binary"))
	must(mknod(filepath.Join(src, "null"), 1, 3))
	must(mkfifo(filepath.Join(src, "fifo")))
	orig, err := r.CommitDir(src, repo.CommitOptions{Branch: "build", Version: "1.2"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "out")
	pres, err := Push(context.Background(), r, orig.ID, PushOptions{Ref: "oci:" + dir + ":1.2"})
	if err != nil {
		t.Fatal(err)
	}
	// Pushing again gives the same image: the layer is reproducible.
	pres2, err := Push(context.Background(), r, orig.ID, PushOptions{Ref: "oci:" + dir + ":1.2"})
	if err != nil || pres2.Manifest != pres.Manifest {
		t.Errorf("second push: %+v, %v (first %s)", pres2, err, pres.Manifest)
	}
	host := newRepo(t)
	res := pull(t, host, "oci:"+dir+":1.2", "os")
	if res.Image != orig.Image.String() {
		t.Fatalf("pushed and pulled image %s, original %s\npulled:\n%s\noriginal:\n%s", res.Image, orig.Image,
			dumpOf(t, host, res.Image), dumpOf(t, r, orig.Image.String()))
	}
	id, _ := host.Branch("os")
	c, _ := host.ReadCommit(id)
	if c.Version != "1.2" || !c.Time.Equal(orig.Commit.Time) {
		t.Errorf("pulled commit: version %q, time %s; original %s", c.Version, c.Time, orig.Commit.Time)
	}
	fsckClean(t, host)

	// A name every reader takes for a whiteout cannot be pushed.
	must(os.WriteFile(filepath.Join(src, ".wh.x"), nil, 0o644))
	bad, err := r.CommitDir(src, repo.CommitOptions{Branch: "bad"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Push(context.Background(), r, bad.ID, PushOptions{Ref: "oci:" + dir + ":bad"}); err == nil || !strings.Contains(err.Error(), "/.wh.x") {
		t.Errorf("push of a tree with .wh.x: %v", err)
	}
}
