package oci

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// TestPullPrepare: PullOptions.Prepare transforms the flattened tree
// before the commit, its warnings come back, and a prepared tip is up to
// date only for a prepared pull.
func TestPullPrepare(t *testing.T) {
	dir := writeLayoutDir(t, testImage(t), "v1")
	r := newRepo(t)
	calls := 0
	prep := func(root *erofs.Node) ([]string, error) {
		calls++
		if root.Lookup("prepared") == nil {
			l := &erofs.Node{Name: "prepared", Mode: erofs.ModeSymlink | 0o777, Nlink: 1, Payload: "yes", Size: 3}
			if err := root.AddChild(l); err != nil {
				return nil, err
			}
		}
		// New content, as osprep stores it: a new object.
		if root.Lookup("added") == nil {
			data := bytes.Repeat([]byte("stored by Prepare\n"), 16)
			d, err := r.PutBytes(data)
			if err != nil {
				return nil, err
			}
			f := &erofs.Node{Name: "added", Mode: erofs.ModeReg | 0o644, Nlink: 1, Size: uint64(len(data)), Digest: d, Payload: d.ObjectPath()}
			if err := root.AddChild(f); err != nil {
				return nil, err
			}
		}
		return []string{"tree looked odd"}, nil
	}
	pullWith := func(prepare func(*erofs.Node) ([]string, error)) *PullResult {
		t.Helper()
		res, err := Pull(context.Background(), r, PullOptions{Ref: "oci:" + dir + ":v1", Branch: "os", Prepare: prepare})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := pullWith(prep)
	if calls != 1 || !slices.Equal(res.Warnings, []string{"tree looked odd"}) {
		t.Errorf("prepare ran %d times, warnings %q", calls, res.Warnings)
	}
	d, _ := verity.ParseDigest(res.Image)
	img, err := r.ReadImage(d)
	if err != nil {
		t.Fatal(err)
	}
	if n := img.Root.Lookup("prepared"); n == nil || n.Payload != "yes" {
		t.Errorf("pulled image lacks what Prepare added:\n%s", dumpOf(t, r, res.Image))
	}
	id, _ := r.Branch("os")
	c, err := r.ReadCommit(id)
	if err != nil || c.OCI == nil || !c.OCI.Prepared {
		t.Fatalf("commit's oci record does not say prepared: %+v, %v", c, err)
	}
	// The object Prepare stored counts as new, as in the commit's record.
	if res.NewObjects != c.Stats.NewObjects || res.NewObjects < 2 {
		t.Errorf("pull says %d new objects, the commit %d; want the layer's and the one Prepare stored", res.NewObjects, c.Stats.NewObjects)
	}

	if res := pullWith(prep); !res.UpToDate || calls != 1 {
		t.Errorf("second prepared pull: up to date %v, prepare ran %d times", res.UpToDate, calls)
	}
	// Without preparation the prepared tip is not the image's tree.
	if res := pullWith(nil); res.UpToDate || res.Image == d.String() {
		t.Errorf("unprepared pull onto a prepared tip: up to date %v, image %s", res.UpToDate, res.Image)
	}
	fsckClean(t, r)
}
