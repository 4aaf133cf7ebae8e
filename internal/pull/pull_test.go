package pull

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/sign"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// A real tree: Go's encoding packages (about 170 files, 3 MB), plus one
// large file so that a transfer can break off in the middle and resume.
const realTree = "/usr/local/go/src/encoding"

func openRepo(t *testing.T, path string) *repo.Repo {
	t.Helper()
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

// fixture is a published repository with one commit of a copy of
// realTree, and an empty local repository.
type fixture struct {
	tree   string // the source tree (a copy, free to change)
	remote *repo.Repo
	local  *repo.Repo
	srv    *server
	first  *repo.CommitResult
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if _, err := os.Stat(realTree); err != nil {
		t.Skipf("no %s: %v", realTree, err)
	}
	dir := t.TempDir()
	f := &fixture{tree: filepath.Join(dir, "tree")}
	if out, err := exec.Command("cp", "-a", realTree, f.tree).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	bigData := make([]byte, 3<<20+12345)
	for i := range bigData {
		bigData[i] = byte(i*7 + i>>11)
	}
	if err := os.WriteFile(filepath.Join(f.tree, "big.bin"), bigData, 0o644); err != nil {
		t.Fatal(err)
	}
	f.remote = openRepo(t, filepath.Join(dir, "remote"))
	f.local = openRepo(t, filepath.Join(dir, "local"))
	var err error
	f.first, err = f.remote.CommitDir(f.tree, repo.CommitOptions{Branch: "os/main", Subject: "first"})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = newServer(t, f.remote.Path)
	return f
}

func (f *fixture) opts() Options {
	return Options{Remote: f.srv.URL, Branch: "os/main", Retry: Retry{Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Idle: 300 * time.Millisecond}}
}

func (f *fixture) pull(t *testing.T, opts Options) *Result {
	t.Helper()
	res, err := Pull(context.Background(), f.local, opts)
	if err != nil {
		t.Fatalf("pull: %v", err)
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
		t.Errorf("fsck %s: %s: %s", r.Path, p.Path, p.What)
	}
	if rep.TempFiles != 0 {
		t.Errorf("fsck %s: %d temporary files left", r.Path, rep.TempFiles)
	}
}

func branchIs(t *testing.T, r *repo.Repo, name string, want verity.Digest) {
	t.Helper()
	got, err := r.Branch(name)
	if err != nil || got != want {
		t.Fatalf("branch %s = %s, %v; want %s", name, got, err, want)
	}
}

func noBranch(t *testing.T, r *repo.Repo, name string) {
	t.Helper()
	if id, err := r.Branch(name); !errors.Is(err, repo.ErrNoBranch) {
		t.Fatalf("branch %s = %s, %v; want none", name, id, err)
	}
}

func objectSize(t *testing.T, r *repo.Repo, d verity.Digest) int64 {
	t.Helper()
	st, err := os.Stat(r.ObjectPath(d))
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestPullAndUpdate(t *testing.T) {
	f := newFixture(t)
	res := f.pull(t, f.opts())
	branchIs(t, f.local, "os/main", f.first.ID)
	if res.Commit != f.first.ID.String() || res.Image != f.first.Image.String() {
		t.Fatalf("result %+v", res)
	}
	if res.Fetched != res.Objects || res.Fetched != f.first.Commit.Stats.Objects {
		t.Errorf("fetched %d of %d objects, the commit has %d", res.Fetched, res.Objects, f.first.Commit.Stats.Objects)
	}
	fsckClean(t, f.local)
	// The pulled commit is the remote one, byte for byte.
	if _, err := f.local.ReadImage(f.first.Image); err != nil {
		t.Fatal(err)
	}

	// Ten files change; pulling the update transfers those objects, the
	// image and the commit record, and the small files of the protocol.
	var changed []string
	filepath.Walk(f.tree, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && info.Size() > 200 && len(changed) < 10 && strings.HasSuffix(p, ".go") {
			changed = append(changed, p)
		}
		return nil
	})
	var changedBytes int64
	for i, p := range changed {
		data, _ := os.ReadFile(p)
		data = append(data, fmt.Sprintf("\n// change %d\n", i)...)
		os.WriteFile(p, data, 0o644)
		changedBytes += int64(len(data))
	}
	second, err := f.remote.CommitDir(f.tree, repo.CommitOptions{Branch: "os/main", Subject: "second"})
	if err != nil {
		t.Fatal(err)
	}
	f.srv.reset()
	res = f.pull(t, f.opts())
	branchIs(t, f.local, "os/main", second.ID)
	if res.Fetched != 10 {
		t.Errorf("fetched %d objects for a 10-file update", res.Fetched)
	}
	if res.ObjectBytes != changedBytes {
		t.Errorf("fetched %d object bytes, the changed files hold %d", res.ObjectBytes, changedBytes)
	}
	meta, _ := os.ReadFile(filepath.Join(f.remote.Path, "meta.json"))
	want := changedBytes + objectSize(t, f.remote, second.Image) + objectSize(t, f.remote, second.ID) +
		int64(len(meta)) + int64(len(second.ID.String())+1)
	if f.srv.sentBytes() != want || res.Bytes != want {
		t.Errorf("server sent %d bytes (pull counted %d), want exactly %d: changed objects %d + image + commit + meta.json + ref",
			f.srv.sentBytes(), res.Bytes, want, changedBytes)
	}
	t.Logf("update: %d bytes for %d bytes of changed files, image %d bytes", f.srv.sentBytes(), changedBytes, objectSize(t, f.remote, second.Image))
	fsckClean(t, f.local)

	// Nothing new: nothing fetched but the metadata.
	res = f.pull(t, f.opts())
	if !res.UpToDate || res.Fetched != 0 {
		t.Errorf("second pull of the same tip: %+v", res)
	}
}

func TestPullFaults(t *testing.T) {
	f := newFixture(t)
	// Every file fails on its first request, the kinds of failure in
	// turn; the big object is cut off twice, then resumed by range.
	kinds := []fault{status500, reset, truncate, flip, stall}
	i := 0
	f.srv.decide = func(path string, n int) fault {
		if strings.HasSuffix(path, ".sig") {
			return ok
		}
		if n == 1 {
			i++
			return kinds[i%len(kinds)]
		}
		return ok
	}
	res := f.pull(t, f.opts())
	branchIs(t, f.local, "os/main", f.first.ID)
	fsckClean(t, f.local)
	// Go's transport itself retries a GET whose reused connection was
	// closed before any response, so count at the server: every file was
	// asked for again after its failure.
	for p, n := range f.srv.requests {
		if n < 2 && !strings.HasSuffix(p, ".sig") {
			t.Errorf("%s: %d requests", p, n)
		}
	}
	if res.Retries == 0 {
		t.Error("no retries counted")
	}
	t.Logf("%d objects, %d requests, %d retries, %.2fs", res.Fetched, res.Requests, res.Retries, res.Seconds)

	// A truncated large object continues where it broke off.
	f2 := newFixture(t)
	bigObj := verity.DigestBytes(mustRead(t, filepath.Join(f2.tree, "big.bin")))
	bigPath := "objects/" + bigObj.ObjectPath()
	f2.srv.decide = func(path string, n int) fault {
		if path == bigPath && n <= 2 {
			return truncate
		}
		return ok
	}
	f2.pull(t, f2.opts())
	fsckClean(t, f2.local)
	size := objectSize(t, f2.remote, bigObj)
	if f2.srv.ranges[bigPath] != 2 || f2.srv.sent[bigPath] > size+size/2 {
		t.Errorf("big object: %d range requests, %d bytes sent for %d", f2.srv.ranges[bigPath], f2.srv.sent[bigPath], size)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPullWrongBytesNeverLand(t *testing.T) {
	f := newFixture(t)
	bigObj := verity.DigestBytes(mustRead(t, filepath.Join(f.tree, "big.bin")))
	bigPath := "objects/" + bigObj.ObjectPath()
	f.srv.decide = func(path string, n int) fault {
		if path == bigPath {
			return flip
		}
		return ok
	}
	opts := f.opts()
	opts.Retry.Attempts = 3
	_, err := Pull(context.Background(), f.local, opts)
	if err == nil {
		t.Fatal("pull of a corrupted object succeeded")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), bigObj.String()) || !strings.Contains(err.Error(), "/big.bin") {
		t.Errorf("the error does not name the object and its file: %v", err)
	}
	noBranch(t, f.local, "os/main")
	if f.local.Objects().Has(bigObj) {
		t.Fatal("the corrupted object was stored")
	}
	fsckClean(t, f.local)

	// The failure stopped the other transfers; what they stored stays.
	all := objectsOf(t, f.remote, f.first.ID)
	have := 0
	for _, d := range all[2:] { // the tree's objects
		if f.local.Objects().Has(d) {
			have++
		}
	}

	// Fixed server: the rerun fetches only what is missing.
	f.srv.decide = nil
	f.srv.reset()
	res := f.pull(t, opts)
	branchIs(t, f.local, "os/main", f.first.ID)
	// The commit record is always read from the remote, to check it; the
	// image was stored by the first try.
	if res.Fetched != len(all)-2-have || f.srv.objectRequests() != res.Fetched+1 {
		t.Errorf("rerun fetched %d objects in %d object requests; %d of %d were there", res.Fetched, f.srv.objectRequests(), have, len(all)-2)
	}
	fsckClean(t, f.local)
}

func TestPullInterruptedResumes(t *testing.T) {
	f := newFixture(t)
	// The server goes away (500 on everything) after 40 objects.
	served := 0
	f.srv.decide = func(path string, n int) fault {
		if strings.HasPrefix(path, "objects/") {
			served++
			if served > 40 {
				return status500
			}
		}
		return ok
	}
	opts := f.opts()
	opts.Retry.Attempts = 2
	opts.Jobs = 2
	if _, err := Pull(context.Background(), f.local, opts); err == nil {
		t.Fatal("pull against a failing server succeeded")
	}
	noBranch(t, f.local, "os/main")
	fsckClean(t, f.local)
	have := 0
	for _, d := range objectsOf(t, f.remote, f.first.ID) {
		if f.local.Objects().Has(d) {
			have++
		}
	}
	if have < 20 {
		t.Fatalf("only %d objects kept from the interrupted pull", have)
	}
	f.srv.decide = nil
	f.srv.reset()
	res := f.pull(t, f.opts())
	branchIs(t, f.local, "os/main", f.first.ID)
	if res.Present < have-2 || res.Fetched != res.Objects-res.Present {
		t.Errorf("resume: %d present, %d fetched of %d; %d were there", res.Present, res.Fetched, res.Objects, have)
	}
	fsckClean(t, f.local)
}

// objectsOf lists the objects a commit's tree references, plus its image
// and record.
func objectsOf(t *testing.T, r *repo.Repo, id verity.Digest) []verity.Digest {
	t.Helper()
	c, root, err := r.CommitTree(id)
	if err != nil {
		t.Fatal(err)
	}
	out := []verity.Digest{id, c.Image}
	seen := map[verity.Digest]bool{}
	erofs.Walk(root, func(n *erofs.Node) error {
		if n.LinkTo == nil && n.IsExternal() {
			d := n.Digest
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
		return nil
	})
	return out
}

func TestPullFileURLAndPath(t *testing.T) {
	f := newFixture(t)
	for i, remote := range []string{"file://" + f.remote.Path, f.remote.Path} {
		local := openRepo(t, filepath.Join(t.TempDir(), fmt.Sprint(i)))
		res, err := Pull(context.Background(), local, Options{Remote: remote, Branch: "os/main", Local: "mine"})
		if err != nil {
			t.Fatalf("pull %s: %v", remote, err)
		}
		branchIs(t, local, "mine", f.first.ID)
		if res.Fetched != res.Objects {
			t.Errorf("%s: %+v", remote, res)
		}
		fsckClean(t, local)
	}
	for _, bad := range []string{"ftp://x/y", "file://host/x", filepath.Join(t.TempDir(), "nothing")} {
		if _, err := Pull(context.Background(), f.local, Options{Remote: bad, Branch: "os/main"}); err == nil {
			t.Errorf("pull from %s succeeded", bad)
		} else {
			t.Logf("%s: %v", bad, err)
		}
	}
	if _, err := Pull(context.Background(), f.local, Options{Remote: f.remote.Path, Branch: "nosuch"}); !errors.Is(err, repo.ErrNoBranch) {
		t.Errorf("missing remote branch: %v", err)
	}
}

func TestPullSignatures(t *testing.T) {
	f := newFixture(t)
	a, _ := sign.GenerateKey()
	b, _ := sign.GenerateKey()
	keyA := []ed25519.PublicKey{a.Public().(ed25519.PublicKey)}
	opts := f.opts()
	opts.VerifyKeys = keyA

	refuse := func(what string, want error) {
		t.Helper()
		f.srv.reset()
		_, err := Pull(context.Background(), f.local, opts)
		if !errors.Is(err, want) {
			t.Fatalf("%s: err = %v, want %v", what, err, want)
		}
		t.Logf("%s: %v", what, err)
		// Nothing but the commit record was fetched.
		if n := f.srv.objectRequests(); n != 1 {
			t.Errorf("%s: %d object requests before refusing", what, n)
		}
		noBranch(t, f.local, "os/main")
	}
	refuse("unsigned", sign.ErrUnsigned)
	if err := sign.SignCommit(f.remote, f.first.ID, b); err != nil {
		t.Fatal(err)
	}
	refuse("signed by another key", sign.ErrUntrusted)

	// A record changed after signing: same signature file, new record
	// (another image), published under its new id.
	if err := sign.SignCommit(f.remote, f.first.ID, a); err != nil {
		t.Fatal(err)
	}
	rec, _ := f.remote.CommitRecord(f.first.ID)
	forged := []byte(strings.Replace(string(rec), `"subject": "first"`, `"subject": "firsT"`, 1))
	forgedID, _, err := f.remote.Objects().PutBytes(forged)
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ := f.remote.CommitSignatures(f.first.ID)
	if err := f.remote.SetCommitSignatures(forgedID, sigs); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(f.remote.Path, "refs/heads/os/main"), []byte(forgedID.String()+"\n"), 0o644)
	refuse("record changed after signing", sign.ErrBadSignature)

	os.WriteFile(filepath.Join(f.remote.Path, "refs/heads/os/main"), []byte(f.first.ID.String()+"\n"), 0o644)
	res := f.pull(t, opts)
	if res.SignedBy != sign.KeyID(keyA[0]) {
		t.Errorf("signed by %q", res.SignedBy)
	}
	// The signatures came along: the local repository can check them.
	if _, err := sign.VerifyCommit(f.local, f.first.ID, keyA); err != nil {
		t.Fatal(err)
	}
	fsckClean(t, f.local)
}

func TestPullDepthAndDowngrade(t *testing.T) {
	f := newFixture(t)
	os.WriteFile(filepath.Join(f.tree, "new"), []byte("a new file of some length, more than sixty-four bytes long......"), 0o644)
	second, err := f.remote.CommitDir(f.tree, repo.CommitOptions{Branch: "os/main", Time: f.first.Commit.Time.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	opts := f.opts()
	opts.Depth = 5
	res := f.pull(t, opts)
	if res.Commits != 2 {
		t.Errorf("depth 5 fetched %d commits", res.Commits)
	}
	if ids, _, err := f.local.Log(second.ID, 0); err != nil || len(ids) != 2 {
		t.Errorf("local log: %v, %v", ids, err)
	}
	fsckClean(t, f.local)

	// The remote goes back to the first commit: refused unless allowed.
	os.WriteFile(filepath.Join(f.remote.Path, "refs/heads/os/main"), []byte(f.first.ID.String()+"\n"), 0o644)
	if _, err := Pull(context.Background(), f.local, f.opts()); !errors.Is(err, ErrDowngrade) {
		t.Fatalf("downgrade: %v", err)
	}
	branchIs(t, f.local, "os/main", second.ID)
	opts = f.opts()
	opts.AllowDowngrade = true
	f.pull(t, opts)
	branchIs(t, f.local, "os/main", f.first.ID)
}

func TestCappedStream(t *testing.T) {
	for _, n := range []int{10, 11} {
		c := &capped{r: strings.NewReader(strings.Repeat("x", n)), left: 10, limit: 10, rel: "objects/x"}
		data, err := io.ReadAll(c)
		if n == 10 && (err != nil || len(data) != 10) {
			t.Errorf("10 bytes under a cap of 10: %d, %v", len(data), err)
		}
		if n == 11 && (err == nil || !strings.Contains(err.Error(), "larger than the 10 bytes")) {
			t.Errorf("11 bytes under a cap of 10: %v", err)
		}
	}
}
