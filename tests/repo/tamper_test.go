package repo

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/tests/mounttest"
)

// tamperEnv is a repository with one commit on main of a small tree with
// two large files, and that commit's ids.
func tamperEnv(t *testing.T) (e *env, commit, image string) {
	t.Helper()
	e = newEnv(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "etc", "big.conf"), strings.Repeat("configuration\n", 1000), 0o644)
	writeFile(t, filepath.Join(src, "usr", "bin", "tool"), strings.Repeat("\x7fELF tool ", 3000), 0o755)
	writeFile(t, filepath.Join(src, "small"), "inline", 0o644)
	commit, image = e.commit("main", src)
	e.fsckClean()
	return e, commit, image
}

// problems runs fsck (with extra flags) and returns its problems as
// "path: what" lines, failing the test unless it exits 1.
func problems(t *testing.T, e *env, extra ...string) []string {
	t.Helper()
	rep, r := e.fsck(extra...)
	if r.code != 1 {
		t.Errorf("fsck %v exits %d, want 1", extra, r.code)
	}
	var out []string
	for _, p := range rep.Problems {
		out = append(out, p.Path+": "+p.What)
	}
	// The text output lists the same problems.
	text := e.run(append([]string{"fsck"}, extra...)...)
	if text.code != 1 {
		t.Errorf("fsck %v (text) exits %d, want 1", extra, text.code)
	}
	for _, line := range out {
		if !strings.Contains(text.stdout, line+"\n") {
			t.Errorf("fsck text output lacks %q:\n%s", line, text.stdout)
		}
	}
	return out
}

// expectProblem fails unless some problem is about path and contains every
// one of words.
func expectProblem(t *testing.T, got []string, path string, words ...string) {
	t.Helper()
	for _, p := range got {
		if !strings.HasPrefix(p, path+": ") {
			continue
		}
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(p, w)
		}
		if ok {
			return
		}
	}
	t.Errorf("no problem about %s saying %q; fsck reported:\n  %s", path, words, strings.Join(got, "\n  "))
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestTamperChangedByte(t *testing.T) {
	e, _, _ := tamperEnv(t)
	obj := e.objectOf("main", "/etc/big.conf")
	flipByte(t, obj, 7000)
	got := problems(t, e)
	expectProblem(t, got, obj, "content digest is", "the name says", obj[len(obj)-62:])
	if len(got) != 1 {
		t.Errorf("one changed object, %d problems: %q", len(got), got)
	}
	// --quick does not re-read contents: a same-size change is what it
	// cannot see in an insecure repository (fs-verity catches it in a
	// secure one).
	rep, r := e.fsck("--quick")
	if r.code != 0 || len(rep.Problems) != 0 {
		t.Logf("fsck --quick on a same-size change: exit %d, %v", r.code, rep.Problems)
	}
	// cat reads the object and checks nothing in an insecure repository;
	// the branch itself still resolves.
	e.ok("show", "main")
}

func TestTamperTruncatedObject(t *testing.T) {
	e, _, _ := tamperEnv(t)
	obj := e.objectOf("main", "/usr/bin/tool")
	if err := os.Truncate(obj, 10000); err != nil {
		t.Fatal(err)
	}
	for _, quick := range [][]string{nil, {"--quick"}} {
		got := problems(t, e, quick...)
		expectProblem(t, got, obj, "size 10000", "says 30000", "/usr/bin/tool", "truncated")
		if quick == nil {
			expectProblem(t, got, obj, "content digest")
		}
		// The commit whose image needs it is reported too.
		expectProblem(t, got, filepath.Join(e.repo, "commits", e.tip("main")), "damaged")
	}
}

func TestTamperMissingObject(t *testing.T) {
	e, _, image := tamperEnv(t)
	obj := e.objectOf("main", "/etc/big.conf")
	if err := os.Remove(obj); err != nil {
		t.Fatal(err)
	}
	for _, quick := range [][]string{nil, {"--quick"}} {
		got := problems(t, e, quick...)
		expectProblem(t, got, obj, "missing", image, "/etc/big.conf")
	}
}

func TestTamperImage(t *testing.T) {
	needMount(t)
	e, commit, image := tamperEnv(t)
	imgObj := e.imageObject(image)
	fi, err := os.Stat(imgObj)
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, imgObj, fi.Size()/2)
	for _, quick := range [][]string{nil, {"--quick"}} {
		got := problems(t, e, quick...)
		// The image link, read as an image, fails its digest.
		expectProblem(t, got, filepath.Join(e.repo, "images", image), "digest")
		expectProblem(t, got, filepath.Join(e.repo, "commits", commit), "image "+image, "damaged")
		if quick == nil {
			expectProblem(t, got, imgObj, "content digest")
		}
	}

	// mount refuses it, by branch and by image digest, and leaves
	// nothing mounted.
	before, loopsBefore := mounttest.Mounts(), loopDevices()
	for _, ref := range []string{"main", image} {
		mnt := filepath.Join(t.TempDir(), "mnt")
		os.Mkdir(mnt, 0o755)
		r := e.fails("mount", ref, mnt)
		if !strings.Contains(r.stderr, "digest mismatch") || !strings.Contains(r.stderr, image) {
			t.Errorf("mount %s of a tampered image: %q should report a digest mismatch for %s", ref, r.stderr, image)
		}
		if mounttest.IsMountPoint(mnt) {
			mounttest.Unmount(t, mnt)
			t.Errorf("mount %s of a tampered image left %s mounted", ref, mnt)
		}
	}
	if after := mounttest.Mounts(); !slices.Equal(before, after) {
		t.Errorf("mount table changed by refused mounts:\nbefore %q\nafter  %q", before, after)
	}
	if after := loopDevices(); !slices.Equal(loopsBefore, after) {
		t.Errorf("loop devices changed by refused mounts: %q -> %q", loopsBefore, after)
	}
}

func TestTamperImageMissing(t *testing.T) {
	e, commit, image := tamperEnv(t)
	if err := os.Remove(e.imageObject(image)); err != nil {
		t.Fatal(err)
	}
	got := problems(t, e, "--quick")
	expectProblem(t, got, filepath.Join(e.repo, "images", image), "missing")
	expectProblem(t, got, filepath.Join(e.repo, "commits", commit), "missing or damaged")
	e.fails("ls", "main")
}

func TestTamperBranchToNothing(t *testing.T) {
	e, _, _ := tamperEnv(t)
	ref := filepath.Join(e.repo, "refs", "heads", "x")
	zero := strings.Repeat("0", 64)
	if err := os.WriteFile(ref, []byte(zero+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, quick := range [][]string{nil, {"--quick"}} {
		got := problems(t, e, quick...)
		expectProblem(t, got, ref, "branch x", zero, "does not exist")
		if len(got) != 1 {
			t.Errorf("problems %q, want only the branch", got)
		}
	}
	// The other branch still works, and the broken one says why.
	e.ok("log", "main")
	if r := e.fails("log", "x"); !strings.Contains(r.stderr, "no such commit") {
		t.Errorf("log x: %q", r.stderr)
	}
	if out := e.ok("branches"); !strings.Contains(out, "x ") || !strings.Contains(out, "broken") {
		t.Errorf("branches with a broken ref:\n%s", out)
	}
	// A ref holding garbage is reported as corrupt.
	os.WriteFile(ref, []byte("not a digest\n"), 0o644)
	expectProblem(t, problems(t, e), ref, "corrupt ref")
}

func TestTamperCommitRecord(t *testing.T) {
	e, commit, _ := tamperEnv(t)
	flipByte(t, filepath.Join(e.repo, "objects", commit[:2], commit[2:]), 5)
	got := problems(t, e, "--quick")
	expectProblem(t, got, filepath.Join(e.repo, "commits", commit), "digest")
	e.fails("show", "main")
}

func TestTamperStrayFile(t *testing.T) {
	e, _, _ := tamperEnv(t)
	stray := filepath.Join(e.repo, "objects", "ab", "not-an-object")
	os.MkdirAll(filepath.Dir(stray), 0o755)
	os.WriteFile(stray, []byte("x"), 0o644)
	expectProblem(t, problems(t, e), stray, "not an object")
}
