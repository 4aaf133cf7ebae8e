package repo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/crashpoint"
	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
)

// crashTree makes a tree of a few thousand files: small ones stored in
// the image, larger ones as objects.
func crashTree(t *testing.T, root string) {
	t.Helper()
	for i := range 3000 {
		var content []byte
		if i%3 == 0 {
			content = []byte(fmt.Sprintf("small %d", i))
		} else {
			content = bytes.Repeat([]byte(fmt.Sprintf("file %d;", i)), 10+i%300)
		}
		writeFile(t, filepath.Join(root, fmt.Sprintf("d%02d/e%d/f%04d", i%40, i%7, i)), string(content), 0o644)
	}
}

// mutate rewrites some of the large files with content unique to round,
// so that the next commit has new objects to write.
func mutate(t *testing.T, root string, round int) {
	t.Helper()
	for i := 1; i < 3000; i += 13 {
		if i%3 == 0 {
			continue
		}
		content := bytes.Repeat([]byte(fmt.Sprintf("round %d file %d;", round, i)), 20+i%200)
		writeFile(t, filepath.Join(root, fmt.Sprintf("d%02d/e%d/f%04d", i%40, i%7, i)), string(content), 0o644)
	}
}

// checkAfterCrash checks the repository after a killed commit: fsck
// finds no problem, and main names the old tip or a new commit whose
// parent is the old tip. It returns main's tip.
func checkAfterCrash(t *testing.T, e *env, old, what string) string {
	t.Helper()
	rep, r := e.fsck()
	for _, p := range rep.Problems {
		t.Errorf("%s: fsck: %s: %s", what, p.Path, p.What)
	}
	if r.code != 0 {
		t.Fatalf("%s: fsck exits %d", what, r.code)
	}
	tip := e.tip("main")
	if tip != old {
		if p := e.parent(tip); p != old {
			t.Fatalf("%s: main moved to %s whose parent is %s, not the old tip %s", what, tip, p, old)
		}
		// The new commit is complete: its tree reads.
		e.ok("ls", "-R", tip)
	}
	return tip
}

// TestCrashSafety kills commits with SIGKILL at random moments and at
// each of the commit's test crash points, and checks after each that the
// repository is consistent and the branch names the old or the new
// commit; then that a normal commit works and gc removes the leftovers.
func TestCrashSafety(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	crashTree(t, src)
	tip, _ := e.commit("main", src)

	// The duration of a commit with new objects bounds the kill delays.
	// The killed commits trust the objects already there: reading them
	// again (the default without fs-verity) only makes each round longer,
	// and what a crash can leave is the same.
	mutate(t, src, 0)
	start := time.Now()
	tip, _ = e.commit("main", src, "--trust-existing")
	d := time.Since(start)
	t.Logf("a commit of 3000 files with %d new objects takes %v", 3000/13*2/3, d.Round(time.Millisecond))

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	iterations := 24
	if testing.Short() {
		iterations = 6
	}
	killed, finished, maxTemps := 0, 0, 0
	for i := range iterations {
		mutate(t, src, i+1)
		var cmd *exec.Cmd
		what := fmt.Sprintf("round %d", i)
		if i%4 == 3 {
			// Every fourth round kills a commit of a tar stream.
			tarFile := filepath.Join(t.TempDir(), "tree.tar")
			if out, err := exec.Command("tar", "-cf", tarFile, "-C", src, ".").CombinedOutput(); err != nil {
				t.Fatalf("tar: %v\n%s", err, out)
			}
			cmd = e.command("commit", "--branch", "main", "--trust-existing", "--from-tar", tarFile)
			what += " (tar)"
		} else {
			cmd = e.command("commit", "--branch", "main", "--trust-existing", src)
		}
		delay := time.Duration(rng.Int64N(int64(d) + 1))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if cmd.ProcessState.Success() {
			finished++
		} else {
			killed++
		}
		tip = checkAfterCrash(t, e, tip, fmt.Sprintf("%s, killed after %v", what, delay.Round(time.Microsecond)))
		rep, _ := e.fsck()
		maxTemps = max(maxTemps, rep.TempFiles)
	}
	t.Logf("%d commits killed, %d finished first; up to %d temporary files left", killed, finished, maxTemps)
	if killed == 0 {
		t.Error("no commit was killed: the delays are too long to test anything")
	}

	// The test crash points stop a commit at each step; they are only in
	// a binary built for it.
	crashBin := gobuild.T(t, "./cmd/cfs-deploy", crashpoint.Tag)
	for i, point := range []string{"after-objects", "mid-image", "after-record", "before-branch", "after-branch"} {
		mutate(t, src, 100+i)
		crash := *e
		crash.t = t
		crash.bin = crashBin
		crash.extra = []string{crashpoint.Env + "=" + point}
		r := crash.run("commit", "--branch", "main", "--trust-existing", src)
		if r.signal != syscall.SIGKILL {
			t.Fatalf("%s=%s: the commit was not killed at that point: %v", crashpoint.Env, point, r)
		}
		newTip := checkAfterCrash(t, e, tip, "crash point "+point)
		if moved := newTip != tip; moved != (point == "after-branch") {
			t.Errorf("crash point %s: branch moved = %v", point, moved)
		}
		tip = newTip
	}

	// Work goes on: a normal commit, then gc removes what the crashes left.
	mutate(t, src, 200)
	newTip, _ := e.commit("main", src)
	if e.parent(newTip) != tip {
		t.Errorf("the commit after the crashes has parent %s, want %s", e.parent(newTip), tip)
	}
	before, _ := e.fsck()
	if before.TempFiles > 0 {
		// The text report counts them apart from problems.
		r := e.run("fsck")
		if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("%d temporary files", before.TempFiles)) {
			t.Errorf("fsck with %d temporary files: %v", before.TempFiles, r)
		}
	}
	var g struct {
		Objects   int `json:"objects"`
		TempFiles int `json:"temp_files"`
	}
	if err := json.Unmarshal([]byte(e.ok("gc", "--json")), &g); err != nil {
		t.Fatal(err)
	}
	if g.Objects == 0 {
		t.Error("gc removed no objects: the killed commits' objects should be garbage")
	}
	if g.TempFiles != before.TempFiles {
		t.Errorf("gc removed %d temporary files, fsck counted %d", g.TempFiles, before.TempFiles)
	}
	after := e.fsckClean()
	if after.TempFiles != 0 {
		t.Errorf("%d temporary files left after gc", after.TempFiles)
	}
	if err := json.Unmarshal([]byte(e.ok("gc", "--json", "--dry-run")), &g); err != nil || g.Objects != 0 || g.TempFiles != 0 {
		t.Errorf("a second gc would still remove %+v (%v)", g, err)
	}
	// Every commit of main's history is intact and mountable content.
	e.ok("log", "main")
	e.ok("cat", "main", "/d01/e1/f0001")
}

// TestShippedBinaryHasNoCrashPoints: the binary an installation ships
// ignores the crash tests' environment variable, so nothing in a user's
// environment can make a commit kill itself half-way.
func TestShippedBinaryHasNoCrashPoints(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), strings.Repeat("content ", 100), 0o644)
	e.extra = []string{crashpoint.Env + "=after-objects"}
	if r := e.run("commit", "--branch", "main", src); r.code != 0 {
		t.Fatalf("%s=after-objects stopped the shipped binary: %v", crashpoint.Env, r)
	}
}
