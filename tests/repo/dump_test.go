package repo

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestDumpCommitChecksObjects: a dump whose regular file claims another
// size than its object has, or names an object the repository lacks, is
// refused before anything is written; the branch stays where it was.
func TestDumpCommitChecksObjects(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), strings.Repeat("0123456789", 1000), 0o644)
	tip, _ := e.commit("main", src)
	obj := e.objectOf("main", "/f")
	digest := filepath.Base(filepath.Dir(obj)) + filepath.Base(obj)
	missing := strings.Repeat("ab", 32)
	dump := func(size int64, d string) string {
		return "/ 0 40755 2 0 0 0 0.0 - - -\n" +
			fmt.Sprintf("/f %d 100644 1 0 0 0 0.0 %s - %s\n", size, d[:2]+"/"+d[2:], d)
	}
	for _, tc := range []struct{ name, dump, want string }{
		{"1 TiB", dump(1<<40, digest), "10000 bytes"},
		{"one byte short", dump(9999, digest), "10000 bytes"},
		{"missing object", dump(10000, missing), "missing"},
	} {
		p := filepath.Join(t.TempDir(), "tree.dump")
		writeFile(t, p, tc.dump, 0o644)
		r := e.fails("commit", "--branch", "main", "--from-dump", p)
		if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "/f") {
			t.Errorf("%s: %q should name /f and say %q", tc.name, r.stderr, tc.want)
		}
		if got := e.tip("main"); got != tip {
			t.Errorf("%s: main moved to %s", tc.name, got)
		}
	}
	if got := e.commits(); len(got) != 1 {
		t.Errorf("%d commits after refused dump commits, want 1", len(got))
	}
	// The right size is accepted.
	p := filepath.Join(t.TempDir(), "tree.dump")
	writeFile(t, p, dump(10000, digest), 0o644)
	e.ok("commit", "--branch", "main", "--from-dump", p)
	// A damaged object is not referenced again: without fs-verity the
	// commit reads it.
	flipByte(t, obj, 10)
	if r := e.fails("commit", "--branch", "main", "--from-dump", p); !strings.Contains(r.stderr, "does not match") {
		t.Errorf("dump commit over a damaged object: %q should say it does not match", r.stderr)
	}
}
