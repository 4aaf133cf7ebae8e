package repo

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// newRepo creates an insecure repository at <tmp>/sysroot/composefs and
// opens it.
func newRepo(t *testing.T) *Repo {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sysroot", "composefs")
	if err := Init(path, InitOptions{Insecure: true}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	r, err := Open(path, OpenOptions{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// reopen closes r and opens its repository again, exclusively if asked.
func reopen(t *testing.T, r *Repo, exclusive bool) *Repo {
	t.Helper()
	r.Close()
	n, err := Open(r.Path, OpenOptions{Exclusive: exclusive})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// writeTree creates files under dir: name -> content; a name ending in
// "/" is a directory, content "->X" a symlink to X.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func big(seed string, n int) string {
	return strings.Repeat(seed, n/len(seed)+1)[:n]
}

func commitFiles(t *testing.T, r *Repo, branch string, files map[string]string) *CommitResult {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, files)
	res, err := r.CommitDir(dir, CommitOptions{Branch: branch, Subject: "test " + branch})
	if err != nil {
		t.Fatalf("CommitDir: %v", err)
	}
	return res
}

func fsckClean(t *testing.T, r *Repo) *FsckReport {
	t.Helper()
	rep, err := r.Fsck(FsckOptions{})
	if err != nil {
		t.Fatalf("Fsck: %v", err)
	}
	for _, p := range rep.Problems {
		t.Errorf("fsck: %s: %s", p.Path, p.What)
	}
	return rep
}

func TestInitSecureNeedsVerity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repo")
	err := Init(path, InitOptions{})
	if err == nil {
		t.Skip("this filesystem supports fs-verity: a secure repository was created")
	}
	if !errors.Is(err, ErrNoVerity) {
		t.Fatalf("Init: %v, want ErrNoVerity", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed Init left %s behind (%v)", path, err)
	}

	// Into an existing directory: it stays, but nothing Init made does.
	existing := t.TempDir()
	os.WriteFile(filepath.Join(existing, "keep"), []byte("x"), 0o644)
	if err := Init(existing, InitOptions{}); !errors.Is(err, ErrNoVerity) {
		t.Fatalf("Init into an existing directory: %v", err)
	}
	ents, _ := os.ReadDir(existing)
	if len(ents) != 1 || ents[0].Name() != "keep" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("after a failed Init the directory holds %v, want only keep", names)
	}
}

func TestInitAndOpen(t *testing.T) {
	r := newRepo(t)
	if r.Secure {
		t.Error("insecure repository opened as secure")
	}
	if err := Init(r.Path, InitOptions{Insecure: true}); err == nil {
		t.Error("Init over an existing repository succeeded")
	}
	var m Meta
	data, err := os.ReadFile(filepath.Join(r.Path, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &m); err != nil || m.Algorithm != "fsverity-sha256-12" || m.Version != 1 {
		t.Errorf("meta.json %s (%v)", data, err)
	}
	if _, err := Open(t.TempDir(), OpenOptions{}); !errors.Is(err, ErrNotRepository) {
		t.Errorf("Open of an empty directory: %v", err)
	}
	if got := r.Sysroot(); filepath.Base(got) != "sysroot" {
		t.Errorf("Sysroot %s", got)
	}
}

func TestOpenRefusesUnknownFormat(t *testing.T) {
	r := newRepo(t)
	r.Close()
	for name, meta := range map[string]string{
		"version":      `{"version": 2, "algorithm": "fsverity-sha256-12"}`,
		"algorithm":    `{"version": 1, "algorithm": "fsverity-sha512-12"}`,
		"incompatible": `{"version": 1, "algorithm": "fsverity-sha256-12", "features": {"incompatible": ["x"]}}`,
		"garbage":      `{`,
	} {
		os.WriteFile(filepath.Join(r.Path, "meta.json"), []byte(meta), 0o644)
		if _, err := Open(r.Path, OpenOptions{}); err == nil {
			t.Errorf("%s: Open accepted %s", name, meta)
		}
	}
}

func TestCommitAndResolve(t *testing.T) {
	r := newRepo(t)
	first := commitFiles(t, r, "os/main", map[string]string{"a": "one", "big": big("x", 5000)})
	second := commitFiles(t, r, "os/main", map[string]string{"a": "two", "big": big("x", 5000)})

	if second.Commit.Parent != first.ID {
		t.Errorf("second commit's parent %q, want %s", second.Commit.Parent, first.ID)
	}
	if !first.Commit.Parent.IsZero() {
		t.Errorf("first commit has parent %q", first.Commit.Parent)
	}
	if second.Commit.Stats.Objects != 1 || second.Commit.Stats.ContentBytes != 5000 {
		t.Errorf("stats %+v", second.Commit.Stats)
	}
	if second.Commit.Branch != "os/main" || second.Commit.Subject != "test os/main" {
		t.Errorf("record %+v", second.Commit)
	}
	for name, want := range map[string]verity.Digest{
		"os/main":                              second.ID,
		"os/main~1":                            first.ID,
		"os/main~0":                            second.ID,
		second.ID.String():                     second.ID,
		first.ID.String()[:10]:                 first.ID,
		strings.ToUpper(first.ID.String()[:8]): first.ID,
	} {
		got, err := r.Resolve(name)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %s, %v; want %s", name, got, err, want)
		}
	}
	for _, bad := range []string{"os/main~2", "nosuch", "abc", "os/main~x", strings.Repeat("0", 64), "00000000"} {
		if got, err := r.Resolve(bad); err == nil {
			t.Errorf("Resolve(%q) = %s, want an error", bad, got)
		}
	}
	ids, commits, err := r.Log(second.ID, 0)
	if err != nil || len(ids) != 2 || ids[0] != second.ID || ids[1] != first.ID || commits[1].Image != first.Image {
		t.Errorf("Log = %v, %v", ids, err)
	}
	if ids, _, _ := r.Log(second.ID, 1); len(ids) != 1 {
		t.Errorf("Log max 1: %d commits", len(ids))
	}
	// The image is indexed and reads back the tree.
	if !r.HasImage(second.Image) {
		t.Error("image not indexed")
	}
	_, root, err := r.CommitTree(second.ID)
	if err != nil {
		t.Fatal(err)
	}
	n, err := erofs.Resolve(root, "/a")
	if err != nil || string(n.Content) != "two" {
		t.Errorf("/a in the tree: %v %q", err, n.Content)
	}
	f, inline, err := r.ReadFile(mustResolve(t, root, "/big"))
	if err != nil || inline != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	data, _ := readAll(f)
	if string(data) != big("x", 5000) {
		t.Error("object content differs")
	}
	branches, err := r.Branches()
	if err != nil || !slices.Equal(branches, []string{"os/main"}) {
		t.Errorf("Branches = %v, %v", branches, err)
	}
	rep := fsckClean(t, r)
	if rep.Commits != 2 || rep.Images != 2 || rep.Branches != 1 || rep.Objects != 5 || rep.TempFiles != 0 {
		t.Errorf("fsck counts %+v", rep)
	}
}

func readAll(f *os.File) ([]byte, error) {
	defer f.Close()
	var b bytes.Buffer
	_, err := b.ReadFrom(f)
	return b.Bytes(), err
}

func mustResolve(t *testing.T, root *erofs.Node, p string) *erofs.Node {
	t.Helper()
	n, err := erofs.Resolve(root, p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCommitIsReproducible(t *testing.T) {
	// Same tree, same time: the same image and the same commit id.
	r := newRepo(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a": "x", "d/b": big("y", 100)})
	when := time.Unix(1700000000, 0)
	a, err := r.CommitDir(dir, CommitOptions{Branch: "a", Time: when})
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.CommitDir(dir, CommitOptions{Branch: "b", Time: when})
	if err != nil {
		t.Fatal(err)
	}
	if a.Image != b.Image {
		t.Errorf("images differ: %s %s", a.Image, b.Image)
	}
	if a.ID == b.ID {
		t.Error("commits on different branches have the same id") // the branch is recorded
	}
}

func TestBranchNames(t *testing.T) {
	for _, ok := range []string{"main", "os/stable", "a.b_c-d+e", "x/y/z"} {
		if err := ValidBranchName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/a", "a/", "a//b", ".hidden", "a/.b", "a.lock", "sp ace", "a/../b", "..", "ü", strings.Repeat("a", 201)} {
		if err := ValidBranchName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	r := newRepo(t)
	if _, err := r.CommitDir(t.TempDir(), CommitOptions{Branch: "../escape"}); err == nil {
		t.Error("commit to branch ../escape accepted")
	}
}

func TestDeleteBranch(t *testing.T) {
	r := newRepo(t)
	commitFiles(t, r, "gone", map[string]string{"a": "a"})
	if err := r.DeleteBranch("gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Branch("gone"); !errors.Is(err, ErrNoBranch) {
		t.Errorf("deleted branch: %v", err)
	}
	if err := r.DeleteBranch("gone"); !errors.Is(err, ErrNoBranch) {
		t.Errorf("second delete: %v", err)
	}
}

func TestCommitDumpNeedsObjects(t *testing.T) {
	r := newRepo(t)
	res := commitFiles(t, r, "main", map[string]string{"big": big("z", 1000), "small": "s"})
	img, err := r.ReadImage(res.Image)
	if err != nil {
		t.Fatal(err)
	}
	var dump bytes.Buffer
	if err := erofs.WriteDump(&dump, img.Root, erofs.DumpPrintOptions{}); err != nil {
		t.Fatal(err)
	}
	// Objects present: the same image.
	again, err := r.CommitDump(bytes.NewReader(dump.Bytes()), "dump", CommitOptions{Branch: "fromdump"})
	if err != nil {
		t.Fatalf("CommitDump: %v", err)
	}
	if again.Image != res.Image {
		t.Errorf("dump commit image %s, want %s", again.Image, res.Image)
	}

	// Objects missing: refused, the branch does not move.
	other := newRepo(t)
	before := commitFiles(t, other, "fromdump", map[string]string{"x": "x"})
	_, err = other.CommitDump(bytes.NewReader(dump.Bytes()), "dump", CommitOptions{Branch: "fromdump"})
	if err == nil || !strings.Contains(err.Error(), "missing") || !strings.Contains(err.Error(), "/big") {
		t.Fatalf("CommitDump with missing objects: %v", err)
	}
	if tip, _ := other.Branch("fromdump"); tip != before.ID {
		t.Errorf("branch moved to %s", tip)
	}
	if ids, _ := other.Commits(); len(ids) != 1 {
		t.Errorf("%d commits indexed, want 1", len(ids))
	}
	fsckClean(t, other)
}

func TestCommitTar(t *testing.T) {
	r := newRepo(t)
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	content := big("tar", 3000)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "etc/data", Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(content))})
	tw.Write([]byte(content))
	tw.Close()
	res, err := r.CommitTar(bytes.NewReader(b.Bytes()), "stdin", CommitOptions{Branch: "tar"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Commit.Stats.NewObjects != 1 || res.Commit.Stats.Objects != 1 {
		t.Errorf("stats %+v", res.Commit.Stats)
	}
	fsckClean(t, r)

	// A broken stream does not move the branch.
	_, err = r.CommitTar(bytes.NewReader(b.Bytes()[:1000]), "cut", CommitOptions{Branch: "tar"})
	if err == nil {
		t.Fatal("truncated tar committed")
	}
	if tip, _ := r.Branch("tar"); tip != res.ID {
		t.Error("branch moved after a failed tar commit")
	}
	fsckClean(t, r)
}

func TestKernelIsRecorded(t *testing.T) {
	r := newRepo(t)
	res := commitFiles(t, r, "k", map[string]string{
		"usr/lib/modules/6.1.0/vmlinuz":        big("K", 10000),
		"usr/lib/modules/6.1.0/initramfs.img":  "tiny", // inline in the image
		"usr/lib/modules/5.10.0/vmlinuz":       big("O", 10000),
		"usr/lib/modules/6.12.0/vmlinuz":       big("N", 10000),
		"usr/lib/modules/6.12.0/initramfs.img": "newer",
	})
	// 6.12.0 sorts before 6.9.0 as a string; as a version it is newest
	// (its initramfs.img is inline in the image).
	k := res.Commit.Kernel
	if k == nil || k.Version != "6.12.0" || k.Initramfs.IsZero() {
		t.Fatalf("kernel %+v", k)
	}
	d := k.Initramfs
	if got, err := r.readObject(d, 100); err != nil || string(got) != "newer" {
		t.Errorf("inline initramfs object: %q %v", got, err)
	}
	// gc keeps the boot objects, inline ones included.
	r = reopen(t, r, true)
	if _, err := r.GC(GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if !r.objects.Has(d) {
		t.Error("gc removed the initramfs object of a live commit")
	}
	fsckClean(t, r)
}

func TestConcurrentCommitsSameTree(t *testing.T) {
	// Commits of the same tree to different branches write the same image
	// and index link at the same time; none may fail.
	r := newRepo(t)
	when := time.Unix(1700000000, 0)
	for round := range 30 {
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"a": big("a", 1000), "b": fmt.Sprint(round)})
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() {
				o, err := Open(r.Path, OpenOptions{})
				if err != nil {
					errs[i] = err
					return
				}
				defer o.Close()
				_, errs[i] = o.CommitDir(dir, CommitOptions{Branch: fmt.Sprintf("b%d", i), Time: when})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, commit %d: %v", round, i, err)
			}
		}
	}
	rep := fsckClean(t, r)
	if rep.TempFiles != 0 {
		t.Errorf("%d temporary files left", rep.TempFiles)
	}
}

func TestConcurrentCommitsSameBranch(t *testing.T) {
	r := newRepo(t)
	var wg sync.WaitGroup
	results := make([]*CommitResult, 6)
	for i := range results {
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"n": fmt.Sprint(i), "big": big(fmt.Sprint(i), 200)})
		wg.Go(func() {
			o, err := Open(r.Path, OpenOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			defer o.Close()
			res, err := o.CommitDir(dir, CommitOptions{Branch: "main"})
			if err != nil {
				t.Error(err)
				return
			}
			results[i] = res
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// The history is a chain through all six commits.
	tip, _ := r.Branch("main")
	ids, _, err := r.Log(tip, 0)
	if err != nil || len(ids) != len(results) {
		t.Fatalf("history has %d commits (%v), want %d: commits to one branch must serialise", len(ids), err, len(results))
	}
	fsckClean(t, r)
}

func TestGCNeedsExclusive(t *testing.T) {
	r := newRepo(t)
	if _, err := r.GC(GCOptions{}); !errors.Is(err, ErrNeedExclusive) {
		t.Errorf("GC on a shared repository: %v", err)
	}
}

func TestExclusiveWaitsForShared(t *testing.T) {
	r := newRepo(t) // holds the shared lock
	got := make(chan error, 1)
	go func() {
		x, err := Open(r.Path, OpenOptions{Exclusive: true})
		if err == nil {
			x.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("exclusive Open returned (%v) while a shared holder is open", err)
	case <-time.After(300 * time.Millisecond):
	}
	r.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exclusive Open still waiting after the shared holder closed")
	}
}

func TestGC(t *testing.T) {
	r := newRepo(t)
	var ids []verity.Digest
	for i := range 5 {
		res := commitFiles(t, r, "main", map[string]string{
			"common": big("common", 1000),
			"gen":    big(fmt.Sprintf("gen%d-", i), 1000),
		})
		ids = append(ids, res.ID)
	}
	side := commitFiles(t, r, "side", map[string]string{"s": big("side", 500)})
	// An abandoned branch: its objects are garbage once the branch is gone.
	gone := commitFiles(t, r, "gone", map[string]string{"g": big("gone", 500)})
	if err := r.DeleteBranch("gone"); err != nil {
		t.Fatal(err)
	}
	// A deployment of the first commit keeps its image and objects.
	first, _ := r.ReadCommit(ids[0])
	deploy := filepath.Join(r.Sysroot(), "state", "deploy", first.Image.String())
	if err := os.MkdirAll(deploy, 0o755); err != nil {
		t.Fatal(err)
	}
	countObjects := func() int {
		n := 0
		r.walkObjects(func(of objectFile) error {
			if of.valid {
				n++
			}
			return nil
		})
		return n
	}
	before := countObjects()

	r = reopen(t, r, true)
	dry, err := r.GC(GCOptions{DryRun: true, Depth: 2})
	if err != nil {
		t.Fatal(err)
	}
	if countObjects() != before {
		t.Fatal("gc --dry-run deleted objects")
	}
	if !dry.DryRun || dry.Commits != 4 || dry.Deployments != 1 {
		t.Errorf("dry run report %+v, want 4 commits (3 of main, 1 of gone)", dry)
	}
	if _, err := os.Stat(filepath.Join(r.Path, "shallow")); err == nil {
		t.Error("gc --dry-run wrote the shallow file")
	}

	rep, err := r.GC(GCOptions{Depth: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Commits != dry.Commits || rep.Objects != dry.Objects || rep.Images != dry.Images {
		t.Errorf("gc %+v differs from its dry run %+v", rep, dry)
	}
	// main keeps exactly 2 commits, side its one; gone's are gone.
	tip, _ := r.Branch("main")
	hist, _, err := r.Log(tip, 0)
	if err != nil {
		t.Fatalf("log after gc --depth: %v", err)
	}
	if len(hist) != 2 || hist[1] != ids[3] {
		t.Errorf("main history after gc --depth 2: %v", hist)
	}
	if got, _ := r.Commits(); len(got) != 3 {
		t.Errorf("%d commits left, want 3", len(got))
	}
	if _, err := r.ReadCommit(side.ID); err != nil {
		t.Errorf("side: %v", err)
	}
	if _, err := r.ReadCommit(gone.ID); err == nil {
		t.Error("the commit of a deleted branch survived gc")
	}
	// The deployed image and its content survive although no kept commit
	// references them.
	if _, err := r.ReadImage(first.Image); err != nil {
		t.Errorf("deployed image: %v", err)
	}
	img, _ := r.ReadImage(first.Image)
	gen0 := mustResolve(t, img.Root, "/gen")
	if !r.objects.Has(gen0.Digest) {
		t.Error("gc removed an object of a deployed image")
	}
	fsckClean(t, r)

	// Later collections, with any depth, work on the shallow history.
	for _, depth := range []int{0, 1, 0} {
		if _, err := r.GC(GCOptions{Depth: depth}); err != nil {
			t.Fatalf("gc --depth %d after a shallow gc: %v", depth, err)
		}
		fsckClean(t, r)
		if _, _, err := r.Log(tip, 0); err != nil {
			t.Errorf("log after gc --depth %d: %v", depth, err)
		}
	}
	if hist, _, _ := r.Log(tip, 0); len(hist) != 1 {
		t.Errorf("after gc --depth 1 main has %d commits", len(hist))
	}
}

func TestGCDepthPerBranch(t *testing.T) {
	// Two branches sharing history: each keeps its own depth.
	r := newRepo(t)
	var ids []verity.Digest
	for i := range 4 {
		ids = append(ids, commitFiles(t, r, "a", map[string]string{"f": fmt.Sprint(i)}).ID)
	}
	if err := r.SetBranch("b", ids[2]); err != nil { // b is a's tip~1
		t.Fatal(err)
	}
	r = reopen(t, r, true)
	if _, err := r.GC(GCOptions{Depth: 2}); err != nil {
		t.Fatal(err)
	}
	hist, _, err := r.Log(ids[2], 0)
	if err != nil || len(hist) != 2 {
		t.Errorf("branch b keeps %d commits (%v), want 2", len(hist), err)
	}
	fsckClean(t, r)
}

func TestGCRefusesBrokenBranch(t *testing.T) {
	r := newRepo(t)
	commitFiles(t, r, "main", map[string]string{"f": big("f", 100)})
	os.WriteFile(r.branchPath("broken"), []byte(strings.Repeat("0", 64)+"\n"), 0o644)
	r = reopen(t, r, true)
	if _, err := r.GC(GCOptions{}); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Errorf("gc with a branch naming no commit: %v", err)
	}
}

func TestGCRemovesTemporaryFiles(t *testing.T) {
	r := newRepo(t)
	commitFiles(t, r, "main", map[string]string{"f": big("f", 100)})
	leftovers := []string{
		filepath.Join(r.Path, "objects", ".tmp-1-1"),
		filepath.Join(r.Path, "objects", ".tar-import-123"),
		filepath.Join(r.Path, "images", "."+strings.Repeat("a", 64)+".tmp-1-2"),
		filepath.Join(r.Path, "commits", "."+strings.Repeat("b", 64)+".tmp-1-3"),
		filepath.Join(r.Path, "refs", "heads", ".main.tmp-99"),
		filepath.Join(r.Path, ".meta.json.tmp-5"),
	}
	for _, p := range leftovers {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Dot files that are not temporary files of this tool are left alone.
	others := []string{filepath.Join(r.Path, ".keep"), filepath.Join(r.Path, "refs", "heads", ".editor-swap")}
	for _, p := range others {
		os.WriteFile(p, nil, 0o644)
	}
	rep := fsckClean(t, r)
	if rep.TempFiles != len(leftovers) {
		t.Errorf("fsck counted %d temporary files, want %d", rep.TempFiles, len(leftovers))
	}
	if branches, _ := r.Branches(); len(branches) != 1 {
		t.Errorf("branches %v", branches)
	}
	r = reopen(t, r, true)
	g, err := r.GC(GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if g.TempFiles != len(leftovers) {
		t.Errorf("gc removed %d temporary files, want %d", g.TempFiles, len(leftovers))
	}
	for _, p := range leftovers {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("gc left %s", p)
		}
	}
	for _, p := range others {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("gc removed %s, which is not its temporary file", p)
		}
	}
}

func TestGCRoots(t *testing.T) {
	r := newRepo(t)
	res := commitFiles(t, r, "tmp", map[string]string{"f": big("root", 300)})
	r.DeleteBranch("tmp")
	r = reopen(t, r, true)
	if _, err := r.GC(GCOptions{Roots: []verity.Digest{res.Image}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadImage(res.Image); err != nil {
		t.Errorf("image named as a root: %v", err)
	}
	if rep, _ := r.GC(GCOptions{}); rep.Images != 1 {
		t.Errorf("without the root the image goes: %+v", rep)
	}
	fsckClean(t, r)
}

// TestMetaFeatures: a repository created secure whose meta.json lost its
// fs-verity is refused, and unknown read-only-compatible features make a
// repository readable but not writable.
func TestMetaFeatures(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "repo")
	if err := Init(path, InitOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
	m, err := readMeta(filepath.Join(path, metaFile))
	if err != nil || m.has(featureSecure) {
		t.Fatalf("insecure repository claims to be secure: %+v %v", m, err)
	}
	// What a secure repository's meta.json says, on a filesystem (this
	// host's) where its fs-verity is gone.
	m = newMeta(true)
	data, _ := marshalJSON(m)
	os.WriteFile(filepath.Join(path, metaFile), data, 0o644)
	if _, err := Open(path, OpenOptions{}); !errors.Is(err, ErrLostVerity) {
		t.Fatalf("open of a secure repository without verity: %v", err)
	}

	m = newMeta(false)
	m.Features.ReadOnlyCompatible = []string{"from-the-future"}
	data, _ = marshalJSON(m)
	os.WriteFile(filepath.Join(path, metaFile), data, 0o644)
	r, err := Open(path, OpenOptions{Exclusive: true})
	if err != nil {
		t.Fatalf("reading must still work: %v", err)
	}
	defer r.Close()
	if _, err := r.Branches(); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	if _, err := r.CommitDir(src, CommitOptions{Branch: "b"}); !errors.Is(err, ErrReadOnly) || !strings.Contains(err.Error(), "from-the-future") {
		t.Fatalf("commit: %v", err)
	}
	if _, err := r.GC(GCOptions{}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("gc: %v", err)
	}
	if _, err := r.GC(GCOptions{DryRun: true}); err != nil {
		t.Fatalf("gc --dry-run only reads: %v", err)
	}
}

// TestGCKeepsNamedImagesAndStreams: images named under images/refs (the
// composefs-rs convention) survive gc, and a repository with composefs-rs
// streams is not collected at all.
func TestGCKeepsNamedImagesAndStreams(t *testing.T) {
	r := newRepo(t)
	old := commitFiles(t, r, "os", map[string]string{"a": big("A", 5000)})
	commitFiles(t, r, "os", map[string]string{"a": big("B", 5000)})
	refs := filepath.Join(r.Path, "images", "refs", "other-tool")
	os.MkdirAll(refs, 0o755)
	if err := os.Symlink("../../"+old.Image.String(), filepath.Join(refs, "keep")); err != nil {
		t.Fatal(err)
	}
	ex := reopen(t, r, true)
	if _, err := ex.GC(GCOptions{Depth: 1}); err != nil {
		t.Fatal(err)
	}
	if !ex.HasImage(old.Image) {
		t.Fatal("gc removed an image named under images/refs")
	}
	os.MkdirAll(filepath.Join(r.Path, "streams", "refs"), 0o755)
	if _, err := ex.GC(GCOptions{}); err == nil || !strings.Contains(err.Error(), "streams") {
		t.Fatalf("gc with composefs-rs streams present: %v", err)
	}
}

// TestCommitRecordBytesUnchanged: records written by earlier versions
// (testdata, from a repository made before digests became verity.Digest
// in the record) read and write back byte for byte, so a commit's id, the
// digest of its record, does not change.
func TestCommitRecordBytesUnchanged(t *testing.T) {
	for _, name := range []string{"commit-v1-root.json", "commit-v1-child.json"} {
		old, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		var c Commit
		if err := json.Unmarshal(old, &c); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		again, err := marshalJSON(&c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, old) {
			t.Errorf("%s written back differs:\n%s\nwas\n%s", name, again, old)
		}
	}
}

// TestImageRefs: SetImageRef names an image under images/refs/ with a
// relative link that resolves, for composefs-rs's gc, and gc keeps what
// is named; bad names and unknown images are refused; RemoveImageRef
// takes the name away again.
func TestImageRefs(t *testing.T) {
	r := newRepo(t)
	res := commitFiles(t, r, "tmp", map[string]string{"f": big("named", 300)})
	const name = "cfs-deploy/deploy/" + "x"
	if err := r.SetImageRef(name, res.Image); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(r.Path, "images", "refs", "cfs-deploy", "deploy", "x")
	if target, _ := os.Readlink(link); target != "../../../"+res.Image.String() {
		t.Errorf("link target %q", target)
	}
	if data, err := os.ReadFile(link); err != nil || verity.DigestBytes(data) != res.Image {
		t.Errorf("the ref does not resolve to the image: %v", err)
	}
	if err := r.DeleteBranch("tmp"); err != nil {
		t.Fatal(err)
	}
	ex := reopen(t, r, true)
	if _, err := ex.GC(GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if !ex.HasImage(res.Image) {
		t.Fatal("gc removed an image named under images/refs")
	}
	for _, bad := range []string{"", "/abs", "a/../b", "-x", "a//b"} {
		if err := ex.SetImageRef(bad, res.Image); err == nil {
			t.Errorf("SetImageRef(%q) accepted", bad)
		}
	}
	if err := ex.SetImageRef("y", verity.DigestBytes([]byte("no such image"))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SetImageRef of a missing image: %v", err)
	}
	for range 2 {
		if err := ex.RemoveImageRef(name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Lstat(link); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ref still there: %v", err)
	}
}

// TestErrorsAreSentinelsWithoutAdvice: the library says what is wrong, as
// a sentinel callers can test; what to do about it (a command, an option)
// is the command line's business.
func TestErrorsAreSentinelsWithoutAdvice(t *testing.T) {
	_, err := Open(t.TempDir(), OpenOptions{})
	if !errors.Is(err, ErrNotRepository) {
		t.Errorf("Open of an empty directory: %v, want ErrNotRepository", err)
	}
	if err != nil && strings.Contains(err.Error(), "cfs-deploy init") {
		t.Errorf("%q gives command-line advice", err)
	}
	err = Init(filepath.Join(t.TempDir(), "r"), InitOptions{})
	if err == nil {
		t.Skip("this filesystem has fs-verity")
	}
	if !errors.Is(err, ErrNoVerity) || strings.Contains(err.Error(), "--insecure") {
		t.Errorf("secure Init without fs-verity: %v, want ErrNoVerity without advice", err)
	}
}
