package repo

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// setAllTimes gives every entry under root the same mtime, so that two
// versions of a tree differ only where the test changes them.
func setAllTimes(t *testing.T, root string, sec int64) {
	t.Helper()
	var paths []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	})
	for i := len(paths) - 1; i >= 0; i-- {
		ts := []unix.Timespec{{Sec: sec, Nsec: 5}, {Sec: sec, Nsec: 5}}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, p, content string, perm os.FileMode) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, perm)
}

// TestHistory checks the read commands on a two-commit history in which
// one file changed, one was added, one removed and one chmodded.
func TestHistory(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	bigContent := strings.Repeat("0123456789", 500)
	writeFile(t, filepath.Join(src, "keep"), "keep", 0o644)
	writeFile(t, filepath.Join(src, "change"), "v1", 0o644)
	writeFile(t, filepath.Join(src, "remove"), "gone", 0o644)
	writeFile(t, filepath.Join(src, "mode"), "m", 0o644)
	writeFile(t, filepath.Join(src, "big"), bigContent, 0o644)
	writeFile(t, filepath.Join(src, "dir", "sub"), "s", 0o600)
	os.Symlink("/abs/target", filepath.Join(src, "dir", "link"))
	setAllTimes(t, src, 1700000000)
	var first struct {
		Commit string `json:"commit"`
		Image  string `json:"image"`
		Record struct {
			Subject string `json:"subject"`
			Version string `json:"version"`
		} `json:"record"`
	}
	out := e.ok("commit", "--json", "--branch", "main", "--subject", "first", "--version", "1.0", src)
	if err := json.Unmarshal([]byte(out), &first); err != nil || len(first.Commit) != 64 || len(first.Image) != 64 ||
		first.Record.Subject != "first" || first.Record.Version != "1.0" {
		t.Fatalf("commit --json: %q (%v)", out, err)
	}
	c1, img1 := first.Commit, first.Image

	writeFile(t, filepath.Join(src, "change"), "v2", 0o644)
	writeFile(t, filepath.Join(src, "added"), "new", 0o644)
	os.Remove(filepath.Join(src, "remove"))
	os.Chmod(filepath.Join(src, "mode"), 0o755)
	setAllTimes(t, src, 1700000000)
	c2, img2 := e.commit("main", src, "--subject", "second\nwith a body")
	e.commit("other", src)

	t.Run("diff", func(t *testing.T) {
		e := *e
		e.t = t
		want := "A /added\nM /change\nm /mode (mode 644->755)\nD /remove\n"
		if got := e.ok("diff", c1, c2); got != want {
			t.Errorf("diff:\n%s\nwant:\n%s", got, want)
		}
		if got := e.ok("diff", "main~1", "main"); got != want {
			t.Errorf("diff main~1 main:\n%s", got)
		}
		var changes []struct {
			Path   string   `json:"path"`
			Kind   string   `json:"kind"`
			Fields []string `json:"fields"`
		}
		if err := json.Unmarshal([]byte(e.ok("diff", "--json", c1, c2)), &changes); err != nil {
			t.Fatal(err)
		}
		wantJSON := []struct {
			Path   string   `json:"path"`
			Kind   string   `json:"kind"`
			Fields []string `json:"fields"`
		}{
			{"/added", "added", nil}, {"/change", "content", nil},
			{"/mode", "metadata", []string{"mode 644->755"}}, {"/remove", "removed", nil},
		}
		if !reflect.DeepEqual(changes, wantJSON) {
			t.Errorf("diff --json: %+v, want %+v", changes, wantJSON)
		}
		if got := e.ok("diff", c2, c2); got != "" {
			t.Errorf("diff of a commit with itself: %q", got)
		}
		if got := e.ok("diff", "--json", c2, "other"); strings.TrimSpace(got) != "[]" {
			t.Errorf("diff --json of equal trees: %q", got)
		}
		if got := e.ok("diff", c2, c1); got != "D /added\nM /change\nm /mode (mode 755->644)\nA /remove\n" {
			t.Errorf("reverse diff:\n%s", got)
		}
		e.fails("diff", c1)
		e.fails("diff", c1, "nosuch")
	})

	t.Run("ls", func(t *testing.T) {
		e := *e
		e.t = t
		want := strings.Join([]string{
			"file      0644     0     0            3 /added",
			"file      0644     0     0         5000 /big",
			"file      0644     0     0            2 /change",
			"directory 0755     0     0 DIRSIZE /dir",
			"file      0644     0     0            4 /keep",
			"file      0755     0     0            1 /mode",
		}, "\n") + "\n"
		got := e.ok("ls", c2)
		// A directory's size is what the image layout makes it.
		if i := strings.Index(got, "directory 0755     0     0 "); i >= 0 {
			want = strings.Replace(want, "DIRSIZE", got[i+27:i+39], 1)
		}
		if got != want {
			t.Errorf("ls:\n%s\nwant:\n%s", got, want)
		}
		if got := e.ok("ls", c2, "/dir"); got != "symlink   0777     0     0           11 /dir/link -> /abs/target\nfile      0600     0     0            1 /dir/sub\n" {
			t.Errorf("ls /dir:\n%s", got)
		}
		if got := e.ok("ls", "-R", c1); strings.Count(got, "\n") != 8 || !strings.Contains(got, " /dir/sub\n") || !strings.Contains(got, " /remove\n") {
			t.Errorf("ls -R of the first commit:\n%s", got)
		}
		ents := e.ls(c2, "/big")
		if len(ents) != 1 || ents[0].Type != "file" || ents[0].Size != 5000 || len(ents[0].Object) != 65 ||
			ents[0].Mtime != "2023-11-14T22:13:20.000000005Z" {
			t.Errorf("ls --json /big: %+v", ents)
		}
		if _, err := os.Stat(filepath.Join(e.repo, "objects", ents[0].Object)); err != nil {
			t.Errorf("ls names object %s: %v", ents[0].Object, err)
		}
		ents = e.ls(c2, "/dir/link")
		if len(ents) != 1 || ents[0].Type != "symlink" || ents[0].Target != "/abs/target" {
			t.Errorf("ls --json /dir/link: %+v", ents)
		}
		e.fails("ls", c2, "/remove")
		e.fails("ls", "nosuch")
	})

	t.Run("cat", func(t *testing.T) {
		e := *e
		e.t = t
		for _, tc := range []struct{ ref, path, want string }{
			{c1, "/change", "v1"}, {c2, "/change", "v2"}, {"main", "change", "v2"},
			{"main~1", "/remove", "gone"}, {c2, "/big", bigContent}, {c2, "/added", "new"},
		} {
			if got := e.ok("cat", tc.ref, tc.path); got != tc.want {
				t.Errorf("cat %s %s: %d bytes %.20q, want %.20q", tc.ref, tc.path, len(got), got, tc.want)
			}
		}
		for _, bad := range [][]string{{c2, "/remove"}, {c2, "/dir"}, {c2, "/nosuch"}, {c2}} {
			e.fails(append([]string{"cat"}, bad...)...)
		}
	})

	t.Run("log", func(t *testing.T) {
		e := *e
		e.t = t
		got := e.ok("log", "main")
		blocks := strings.Split(strings.TrimRight(got, "\n"), "\n\n")
		// commit 2 header, its subject, commit 1 header, its subject
		if len(blocks) != 4 {
			t.Fatalf("log: %d blocks:\n%s", len(blocks), got)
		}
		date := regexpDate(t, blocks[0])
		wantHead2 := fmt.Sprintf("commit %s\nparent %s\ndate   %s\nimage  %s", c2, c1, date, img2)
		if blocks[0] != wantHead2 {
			t.Errorf("log, first commit:\n%s\nwant:\n%s", blocks[0], wantHead2)
		}
		if blocks[1] != "    second\n    with a body" {
			t.Errorf("log, first subject %q", blocks[1])
		}
		wantHead1 := fmt.Sprintf("commit %s\ndate   %s\nimage  %s\nversion 1.0", c1, regexpDate(t, blocks[2]), img1)
		if blocks[2] != wantHead1 {
			t.Errorf("log, second commit:\n%s\nwant:\n%s", blocks[2], wantHead1)
		}
		if blocks[3] != "    first" {
			t.Errorf("log, second subject %q", blocks[3])
		}
		if got := e.ok("log", "-n", "1", "main"); strings.Count(got, "commit ") != 1 {
			t.Errorf("log -n 1:\n%s", got)
		}
		var entries []struct {
			ID     string `json:"id"`
			Commit struct {
				Parent string `json:"parent"`
				Image  string `json:"image"`
				Branch string `json:"branch"`
			} `json:"commit"`
		}
		if err := json.Unmarshal([]byte(e.ok("log", "--json", "main")), &entries); err != nil {
			t.Fatal(err)
		}
		if len(entries) != 2 || entries[0].ID != c2 || entries[0].Commit.Parent != c1 || entries[1].ID != c1 ||
			entries[1].Commit.Image != img1 || entries[0].Commit.Branch != "main" {
			t.Errorf("log --json: %+v", entries)
		}
		e.fails("log", "nosuch")
	})

	t.Run("show", func(t *testing.T) {
		e := *e
		e.t = t
		got := e.ok("show", "main")
		if !strings.HasPrefix(got, "commit "+c2+"\nparent "+c1+"\n") || !strings.Contains(got, "image  "+img2+"\n") ||
			!strings.HasSuffix(got, "\n9 entries, 1 objects, 4.9 KiB of content\n") {
			t.Errorf("show main:\n%s", got)
		}
		if got := e.ok("show", c1[:12]); !strings.HasPrefix(got, "commit "+c1+"\ndate") || !strings.Contains(got, "version 1.0\n") {
			t.Errorf("show <prefix of the first commit>:\n%s", got)
		}
		var v struct {
			ID     string `json:"id"`
			Commit struct {
				Image string `json:"image"`
				Time  string `json:"time"`
				Stats struct {
					Entries      int   `json:"entries"`
					Objects      int   `json:"objects"`
					ContentBytes int64 `json:"content_bytes"`
				} `json:"stats"`
			} `json:"commit"`
		}
		if err := json.Unmarshal([]byte(e.ok("show", "--json", "main~1")), &v); err != nil {
			t.Fatal(err)
		}
		if v.ID != c1 || v.Commit.Image != img1 || v.Commit.Stats.Entries != 9 || v.Commit.Stats.Objects != 1 || v.Commit.Stats.ContentBytes != 5000 {
			t.Errorf("show --json main~1: %+v", v)
		}
		if ts, err := time.Parse(time.RFC3339, v.Commit.Time); err != nil || time.Since(ts) > time.Hour || time.Since(ts) < -time.Minute {
			t.Errorf("commit time %q (%v)", v.Commit.Time, err)
		}
		e.fails("show", "main~2")
	})

	t.Run("branches", func(t *testing.T) {
		e := *e
		e.t = t
		got := e.ok("branches")
		lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], fmt.Sprintf("%-20s %s  ", "main", c2[:12])) ||
			!strings.HasPrefix(lines[1], "other ") {
			t.Errorf("branches:\n%s", got)
		}
		var bs []struct {
			Branch string `json:"branch"`
			Commit string `json:"commit"`
			Image  string `json:"image"`
			Error  string `json:"error"`
		}
		if err := json.Unmarshal([]byte(e.ok("branches", "--json")), &bs); err != nil {
			t.Fatal(err)
		}
		if len(bs) != 2 || bs[0].Branch != "main" || bs[0].Commit != c2 || bs[0].Image != img2 || bs[1].Branch != "other" || bs[1].Error != "" {
			t.Errorf("branches --json: %+v", bs)
		}
		empty := newEnv(t)
		if got := strings.TrimSpace(empty.ok("branches", "--json")); got != "[]" {
			t.Errorf("branches --json of an empty repository: %q", got)
		}
	})
}

// regexpDate returns the date of a log block's "date" line after checking
// that it is RFC 3339 UTC.
func regexpDate(t *testing.T, block string) string {
	t.Helper()
	for _, line := range strings.Split(block, "\n") {
		if d, ok := strings.CutPrefix(line, "date   "); ok {
			if _, err := time.Parse(time.RFC3339, d); err != nil || !strings.HasSuffix(d, "Z") {
				t.Errorf("date %q is not RFC 3339 UTC", d)
			}
			return d
		}
	}
	t.Errorf("no date line in\n%s", block)
	return ""
}
