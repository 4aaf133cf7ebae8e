package repo

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// namedImages lists what composefs-rs's garbage collector keeps: the
// images that symlinks under images/refs/** name (it reads the digest off
// the end of each link's target), by link name relative to images/refs.
func namedImages(t *testing.T, repoDir string) map[string]string {
	t.Helper()
	root := filepath.Join(repoDir, "images", "refs")
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = target[max(0, len(target)-64):]
		// The link resolves, to the image itself.
		if _, err := os.Stat(p); err != nil {
			t.Errorf("image ref %s -> %s does not resolve: %v", rel, target, err)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

// TestBranchImageRefs: every branch tip's image is named under
// images/refs/ (cfs-deploy/heads/<branch>), so composefs-rs's gc keeps it
// in a repository both tools use; the ref follows the branch.
func TestBranchImageRefs(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), strings.Repeat("1", 200), 0o644)
	_, img1 := e.commit("main", src)
	writeFile(t, filepath.Join(src, "f"), strings.Repeat("2", 200), 0o644)
	_, img2 := e.commit("os/stable", src)
	want := map[string]string{"cfs-deploy/heads/main": img1, "cfs-deploy/heads/os/stable": img2}
	check := func(what string) {
		t.Helper()
		got := namedImages(t, e.repo)
		if len(got) != len(want) {
			t.Errorf("%s: image refs %v, want %v", what, got, want)
		}
		for name, img := range want {
			if got[name] != img {
				t.Errorf("%s: images/refs/%s names %q, want %s", what, name, got[name], img)
			}
		}
	}
	check("after two commits")

	writeFile(t, filepath.Join(src, "f"), strings.Repeat("3", 200), 0o644)
	_, img3 := e.commit("main", src)
	want["cfs-deploy/heads/main"] = img3
	check("after main moved")

	// A repository from before image refs gets them at the next gc.
	if err := os.RemoveAll(filepath.Join(e.repo, "images", "refs", "cfs-deploy")); err != nil {
		t.Fatal(err)
	}
	e.ok("gc")
	check("after gc of a repository without refs")
	e.fsckClean()
}
