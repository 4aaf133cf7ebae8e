package repo

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/tests/treecmp"
	"golang.org/x/sys/unix"
)

// bigTree makes a tree of n files, most of them large enough to be
// objects, with content depending on tag.
func bigTree(t *testing.T, root, tag string, n int) {
	t.Helper()
	for i := range n {
		content := strings.Repeat(fmt.Sprintf("%s %d ", tag, i), 20+i%50)
		writeFile(t, filepath.Join(root, fmt.Sprintf("d%d/f%d", i%20, i)), content, 0o644)
	}
}

// commitProc is a commit running as its own process.
type commitProc struct {
	cmd        *exec.Cmd
	out, errb  bytes.Buffer
	start, end time.Time
	err        error
}

func (e *env) startCommit(branch, src string) *commitProc {
	e.t.Helper()
	p := &commitProc{cmd: e.command("commit", "--branch", branch, src)}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.errb
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (p *commitProc) wait(t *testing.T) (commit string) {
	t.Helper()
	p.err = waitTimeout(p.cmd, 5*time.Minute)
	p.end = time.Now()
	if p.err != nil {
		t.Fatalf("commit: %v\n%s", p.err, p.errb.String())
	}
	c, _ := parseCommit(t, p.out.String())
	return c
}

func TestConcurrentCommitsDifferentBranches(t *testing.T) {
	e := newEnv(t)
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	bigTree(t, a, "tree a", 1000)
	bigTree(t, b, "tree b", 1000)
	pa, pb := e.startCommit("a", a), e.startCommit("b", b)
	ca, cb := pa.wait(t), pb.wait(t)
	if pa.end.Before(pb.start) || pb.end.Before(pa.start) {
		t.Logf("the two commits did not overlap (%v..%v, %v..%v)", pa.start, pa.end, pb.start, pb.end)
	}
	if e.tip("a") != ca || e.tip("b") != cb {
		t.Errorf("tips a=%s b=%s, want %s %s", e.tip("a"), e.tip("b"), ca, cb)
	}
	if got := e.ok("cat", "a", "/d7/f7"); got != strings.Repeat("tree a 7 ", 27) {
		t.Errorf("a's file: %.40q", got)
	}
	if got := e.ok("cat", "b", "/d7/f7"); got != strings.Repeat("tree b 7 ", 27) {
		t.Errorf("b's file: %.40q", got)
	}
	e.fsckClean()

	// The same tree committed to two branches at once writes the same
	// image and index links from both processes.
	for round := range 5 {
		src := filepath.Join(t.TempDir(), "same")
		bigTree(t, src, fmt.Sprintf("round %d", round), 200)
		p1, p2 := e.startCommit("same1", src), e.startCommit("same2", src)
		p1.wait(t)
		p2.wait(t)
	}
	if rep := e.fsckClean(); rep.TempFiles != 0 {
		t.Errorf("%d temporary files left by successful commits", rep.TempFiles)
	}
}

func TestConcurrentCommitsSameBranch(t *testing.T) {
	e := newEnv(t)
	base := t.TempDir()
	writeFile(t, filepath.Join(base, "base"), "base", 0o644)
	tip, _ := e.commit("main", base)
	for round := range 3 {
		a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
		bigTree(t, a, fmt.Sprintf("a%d", round), 600)
		bigTree(t, b, fmt.Sprintf("b%d", round), 600)
		pa, pb := e.startCommit("main", a), e.startCommit("main", b)
		ca, cb := pa.wait(t), pb.wait(t)
		newTip := e.tip("main")
		var first, second string
		switch newTip {
		case ca:
			first, second = cb, ca
		case cb:
			first, second = ca, cb
		default:
			t.Fatalf("round %d: main is %s, neither commit (%s, %s)", round, newTip, ca, cb)
		}
		// They serialised: one's parent is the other, whose parent is the
		// old tip. Neither commit is lost.
		if p := e.parent(second); p != first {
			t.Errorf("round %d: the last commit's parent is %s, want the other commit %s", round, p, first)
		}
		if p := e.parent(first); p != tip {
			t.Errorf("round %d: the first commit's parent is %s, want the old tip %s", round, p, tip)
		}
		tip = newTip
	}
	if out := e.ok("log", "main"); strings.Count(out, "commit ") != 7 {
		t.Errorf("main has %d commits, want 7", strings.Count(out, "commit "))
	}
	e.fsckClean()
}

// TestGCWaitsForCommit holds a commit open (it reads a tar stream from a
// pipe the test controls) and checks that gc waits until it is done and
// keeps what it committed.
func TestGCWaitsForCommit(t *testing.T) {
	e := newEnv(t)
	old := t.TempDir()
	writeFile(t, filepath.Join(old, "old"), strings.Repeat("old", 100), 0o644)
	e.commit("main", old)
	e.commit("main", t.TempDir()) // the first commit's object is now garbage

	commit := e.command("commit", "--branch", "main", "--from-tar", "-")
	stdin, err := commit.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := commit.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	commit.Stdout = &out
	if err := commit.Start(); err != nil {
		t.Fatal(err)
	}
	defer commit.Process.Kill()
	// The commit says which repository it opened once it holds the lock.
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "repository ") {
		t.Fatalf("commit's first line %q (%v)", line, err)
	}
	// Half of the stream goes in now: its objects are not referenced by
	// anything yet.
	content := bytes.Repeat([]byte("streamed content "), 20000)
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "first", Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(1, 0)})
	tw.Write(content)
	tw.Flush()
	split := tb.Len()
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "second", Mode: 0o644, Size: 6, ModTime: time.Unix(1, 0)})
	tw.Write([]byte("second"))
	tw.Close()
	if _, err := stdin.Write(tb.Bytes()[:split]); err != nil {
		t.Fatal(err)
	}

	gc := e.command("gc", "--json")
	var gcOut, gcErr bytes.Buffer
	gc.Stdout, gc.Stderr = &gcOut, &gcErr
	if err := gc.Start(); err != nil {
		t.Fatal(err)
	}
	gcDone := make(chan error, 1)
	go func() { gcDone <- gc.Wait() }()
	select {
	case err := <-gcDone:
		t.Fatalf("gc finished (%v) while a commit holds the repository: %s%s", err, gcOut.String(), gcErr.String())
	case <-time.After(2 * time.Second):
	}

	stdin.Write(tb.Bytes()[split:])
	stdin.Close()
	commitErr := make(chan error, 1)
	go func() { commitErr <- commit.Wait() }()
	var commitEnd time.Time
	select {
	case err := <-commitErr:
		commitEnd = time.Now()
		if err != nil {
			t.Fatalf("commit: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("commit did not finish")
	}
	select {
	case err := <-gcDone:
		if err != nil {
			t.Fatalf("gc: %v\n%s", err, gcErr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("gc still waiting a minute after the commit ended")
	}
	_ = commitEnd
	c, _ := parseCommit(t, out.String())
	if e.tip("main") != c {
		t.Errorf("main is %s, want the commit %s", e.tip("main"), c)
	}
	if got := e.ok("cat", "main", "/first"); got != string(content) {
		t.Errorf("the committed file lost its content (%d bytes)", len(got))
	}
	e.fsckClean()
}

// TestCommitWaitsForGC holds the repository lock exclusively, as gc does,
// and checks that a commit waits for it.
func TestCommitWaitsForGC(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("no flock(1)")
	}
	e := newEnv(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), "f", 0o644)
	lock := filepath.Join(e.repo, "lock")
	holder := exec.Command("flock", "--exclusive", lock, "sleep", "2")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the holder has the lock.
	f, err := os.Open(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for {
		if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
			break
		}
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		time.Sleep(10 * time.Millisecond)
	}
	held := time.Now()
	e.commit("main", src)
	d := time.Since(held)
	if err := holder.Wait(); err != nil {
		t.Fatal(err)
	}
	if d < 1500*time.Millisecond {
		t.Errorf("commit finished %v after the exclusive lock was taken, before it was released", d)
	}
}

func TestGCKeepsReferenced(t *testing.T) {
	needMount(t)
	e := newEnv(t)
	keepSrc, dSrc, eSrc, fSrc := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(keepSrc, "k"), strings.Repeat("keep ", 100), 0o644)
	writeFile(t, filepath.Join(dSrc, "deployed"), strings.Repeat("deployed ", 100), 0o644)
	writeFile(t, filepath.Join(dSrc, "shared"), strings.Repeat("shared ", 100), 0o644)
	writeFile(t, filepath.Join(eSrc, "only-e"), strings.Repeat("only in E ", 100), 0o644)
	writeFile(t, filepath.Join(eSrc, "shared"), strings.Repeat("shared ", 100), 0o644)
	writeFile(t, filepath.Join(fSrc, "tip"), strings.Repeat("tip ", 100), 0o644)

	e.commit("keep", keepSrc)
	dCommit, dImage := e.commit("main", dSrc)
	eCommit, eImage := e.commit("main", eSrc)
	eOnly := e.objectOf(eCommit, "/only-e")
	dOnly := e.objectOf(dCommit, "/deployed")
	e.commit("main", fSrc)
	// A deployment of D lives next to the repository.
	if err := os.MkdirAll(filepath.Join(e.sysroot, "state", "deploy", dImage, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}

	before := snapshot(t, e.repo)
	dry := e.ok("gc", "--dry-run", "--depth", "1")
	if !strings.HasPrefix(dry, "would remove ") {
		t.Errorf("gc --dry-run says %q", dry)
	}
	if after := snapshot(t, e.repo); after != before {
		t.Fatalf("gc --dry-run changed the repository:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	e.ok("gc", "--depth", "1")
	for _, gone := range []string{eOnly, filepath.Join(e.repo, "images", eImage), e.imageObject(eImage),
		filepath.Join(e.repo, "commits", eCommit)} {
		if _, err := os.Lstat(gone); err == nil {
			t.Errorf("gc kept %s, which nothing references", gone)
		}
	}
	for _, kept := range []string{dOnly, filepath.Join(e.repo, "images", dImage), e.imageObject(dImage)} {
		if _, err := os.Stat(kept); err != nil {
			t.Errorf("gc removed what a deployment references: %v", err)
		}
	}
	treecmp.Compare(t, dSrc, e.mount(dImage), treecmp.Options{})
	treecmp.Compare(t, fSrc, e.mount("main"), treecmp.Options{})
	treecmp.Compare(t, keepSrc, e.mount("keep"), treecmp.Options{})
	if out := e.ok("log", "main"); strings.Count(out, "commit ") != 1 {
		t.Errorf("main keeps %d commits after gc --depth 1", strings.Count(out, "commit "))
	}
	e.fsckClean()

	// Once the deployment is gone, so is its image.
	os.RemoveAll(filepath.Join(e.sysroot, "state", "deploy", dImage))
	e.ok("gc")
	if _, err := os.Stat(dOnly); err == nil {
		t.Error("the undeployed image's objects survived gc")
	}
	e.fsckClean()
}

func TestGCDepth(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range 5 {
		src := t.TempDir()
		writeFile(t, filepath.Join(src, "f"), strings.Repeat(fmt.Sprint(i), 100), 0o644)
		c, _ := e.commit("main", src)
		ids = append(ids, c)
	}
	logIDs := func() []string {
		var entries []struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(e.ok("log", "--json", "main")), &entries); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, en := range entries {
			out = append(out, en.ID)
		}
		return out
	}
	e.ok("gc", "--depth", "2")
	if got := logIDs(); len(got) != 2 || got[0] != ids[4] || got[1] != ids[3] {
		t.Fatalf("after gc --depth 2, log lists %q, want the last two commits", got)
	}
	if n := len(e.commits()); n != 2 {
		t.Errorf("%d commits indexed, want 2", n)
	}
	e.ok("show", "main~1")
	e.fails("show", "main~2")
	if got := e.ok("cat", "main~1", "/f"); got != strings.Repeat("3", 100) {
		t.Errorf("main~1:/f = %q", got)
	}
	e.fsckClean()

	// gc without a depth, and with a larger one, keeps the shallow
	// history as it is and works.
	e.ok("gc")
	e.ok("gc", "--depth", "4")
	if got := logIDs(); len(got) != 2 {
		t.Errorf("log lists %d commits", len(got))
	}
	e.fsckClean()

	// The configuration's keep-depth applies when --depth is not given.
	for i := range 3 {
		src := t.TempDir()
		writeFile(t, filepath.Join(src, "f"), strings.Repeat(fmt.Sprint(i+5), 100), 0o644)
		e.commit("main", src)
	}
	if err := os.WriteFile(e.config, []byte("[gc]\nkeep-depth = 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.ok("gc")
	if got := logIDs(); len(got) != 3 {
		t.Errorf("gc with keep-depth = 3 left %d commits", len(got))
	}
	e.fsckClean()
}

func TestInitSecureNeedsVerity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sysroot", "composefs")
	cfg := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(cfg, nil, 0o644)
	cmd := exec.Command(bin, "init", "--repo", dir, "--config", cfg)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Skipf("this filesystem supports fs-verity: %s", out)
	}
	if !strings.Contains(string(out), "--insecure") {
		t.Errorf("secure init on a filesystem without fs-verity: %q should mention --insecure", out)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("the failed init left %s", dir)
	}
	e := &env{t: t, repo: dir, config: cfg}
	if r := e.fails("branches"); !strings.Contains(r.stderr, "not a cfs-deploy repository") {
		t.Errorf("branches without a repository: %q", r.stderr)
	}
	// --insecure works and says so.
	if out := e.ok("init", "--insecure"); !strings.Contains(out, "insecure") {
		t.Errorf("init --insecure says %q", out)
	}
	e.fails("init", "--insecure")
}
