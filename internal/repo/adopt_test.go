package repo

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// copyObject copies one object from src to dst as a pull would.
func copyObject(t *testing.T, src, dst *Repo, d verity.Digest) {
	t.Helper()
	f, err := os.Open(src.ObjectPath(d))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := dst.Objects().PutVerified(f, -1, d); err != nil {
		t.Fatal(err)
	}
}

// copyCommit copies a commit's record, image and objects except skip.
func copyCommit(t *testing.T, src, dst *Repo, id verity.Digest, skip map[verity.Digest]bool) {
	t.Helper()
	c, root, err := src.CommitTree(id)
	if err != nil {
		t.Fatal(err)
	}
	objs := map[verity.Digest]bool{id: true, c.Image: true}
	treeObjects(root, objs)
	for d := range objs {
		if !skip[d] {
			copyObject(t, src, dst, d)
		}
	}
}

func TestAddCommits(t *testing.T) {
	src, dst := newRepo(t), newRepo(t)
	first := commitFiles(t, src, "main", map[string]string{"a": big("a", 5000), "b": big("b", 7000)})
	second := commitFiles(t, src, "main", map[string]string{"a": big("a", 5000), "b": big("B", 7000), "c": big("c", 100)})

	// A missing object: refused, nothing recorded, the branch not created.
	bObj := verity.DigestBytes([]byte(big("B", 7000)))
	copyCommit(t, src, dst, second.ID, map[verity.Digest]bool{bObj: true})
	err := dst.AddCommits([]verity.Digest{second.ID}, AddOptions{Branch: "os"})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("AddCommits with a missing object: %v", err)
	}
	if _, err := dst.Branch("os"); !errors.Is(err, ErrNoBranch) {
		t.Fatalf("branch after a refused add: %v", err)
	}
	if dst.hasCommit(second.ID) {
		t.Fatal("commit indexed after a refused add")
	}

	// Complete: recorded as a shallow history (its parent is not here).
	copyObject(t, src, dst, bObj)
	if err := dst.AddCommits([]verity.Digest{second.ID}, AddOptions{Branch: "os", CheckOld: true}); err != nil {
		t.Fatal(err)
	}
	if id, _ := dst.Branch("os"); id != second.ID {
		t.Fatalf("branch = %s, want %s", id, second.ID)
	}
	if !dst.shallowCommits()[second.ID] {
		t.Error("commit without its parent not recorded as shallow")
	}
	if ids, _, err := dst.Log(second.ID, 0); err != nil || len(ids) != 1 {
		t.Errorf("log of a shallow pull = %v, %v", ids, err)
	}
	fsckClean(t, dst)

	// The old tip is checked: a branch that moved meanwhile is not reset.
	if err := dst.AddCommits([]verity.Digest{second.ID}, AddOptions{Branch: "os", CheckOld: true, Old: first.ID}); !errors.Is(err, ErrBranchMoved) {
		t.Fatalf("AddCommits over a moved branch: %v", err)
	}

	// Two commits, newest first, must form a chain.
	copyCommit(t, src, dst, first.ID, nil)
	if err := dst.AddCommits([]verity.Digest{first.ID, second.ID}, AddOptions{Branch: "x"}); err == nil {
		t.Fatal("AddCommits accepted commits that are not a chain")
	}
	if err := dst.AddCommits([]verity.Digest{second.ID, first.ID}, AddOptions{Branch: "full"}); err != nil {
		t.Fatal(err)
	}
	if ids, _, err := dst.Log(second.ID, 0); err != nil || len(ids) != 2 {
		t.Errorf("log after adding the parent = %v, %v", ids, err)
	}
	fsckClean(t, dst)
}

func TestSignaturesFollowCommits(t *testing.T) {
	r := newRepo(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"f": big("f", 3000)})
	var signed []byte
	res, err := r.CommitDir(dir, CommitOptions{Branch: "main", Sign: func(id verity.Digest, record []byte) ([]byte, error) {
		signed = record
		return []byte("sig of " + id.String()), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.CommitRecord(res.ID)
	if err != nil || string(rec) != string(signed) || verity.DigestBytes(rec) != res.ID {
		t.Fatalf("the signer got other bytes than the record: %v", err)
	}
	if got, err := r.CommitSignatures(res.ID); err != nil || string(got) != "sig of "+res.ID.String() {
		t.Fatalf("CommitSignatures = %q, %v", got, err)
	}
	fsckClean(t, r)

	// A second commit without signature; gc --depth 1 drops the first
	// commit and its signature file.
	other := commitFiles(t, r, "main", map[string]string{"g": "x"})
	if _, err := r.CommitSignatures(other.ID); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("unsigned commit: %v", err)
	}
	r = reopen(t, r, true)
	if _, err := r.GC(GCOptions{Depth: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(r.Path, SignaturePath(res.ID))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("signature of a collected commit kept: %v", err)
	}
	fsckClean(t, r)
}

func TestNamedImages(t *testing.T) {
	r := newRepo(t)
	content := []byte(big("layer", 9000))
	d, _, err := r.Objects().PutBytes(content)
	if err != nil {
		t.Fatal(err)
	}
	root := erofs.NewDirectory("", 0o755)
	f := &erofs.Node{Name: "f", Mode: erofs.ModeReg | 0o644, Nlink: 1, Size: uint64(len(content)), Digest: d, Payload: d.ObjectPath()}
	if err := root.AddChild(f); err != nil {
		t.Fatal(err)
	}
	img, err := r.AddNamedImage("oci/layers/sha256-abc", root)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.NamedImage("oci/layers/sha256-abc"); err != nil || got != img {
		t.Fatalf("NamedImage = %s, %v", got, err)
	}
	if names, err := r.NamedImages("oci/layers"); err != nil || len(names) != 1 || names[0] != "oci/layers/sha256-abc" {
		t.Fatalf("NamedImages = %v, %v", names, err)
	}
	// The link resolves to the image.
	if _, err := os.Stat(filepath.Join(r.Path, "images", "refs", "oci", "layers", "sha256-abc")); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, r)
	r = reopen(t, r, true)
	if rep, err := r.GC(GCOptions{}); err != nil || rep.Objects != 0 {
		t.Fatalf("gc removed %+v, %v", rep, err)
	}
	if err := r.DeleteNamedImage("oci/layers/sha256-abc"); err != nil {
		t.Fatal(err)
	}
	if rep, err := r.GC(GCOptions{}); err != nil || rep.Objects != 2 {
		t.Fatalf("gc after unnaming: %+v, %v", rep, err)
	}
	fsckClean(t, r)
}
