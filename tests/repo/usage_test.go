package repo

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCommandLineMistakes gives every command an operand it does not take
// or a number out of range: each must refuse with a usage error (exit 2)
// and change nothing. "gc dry-run", a typo for --dry-run, once collected
// for real.
func TestCommandLineMistakes(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), strings.Repeat("x", 500), 0o644)
	e.commit("main", src)
	writeFile(t, filepath.Join(src, "f"), strings.Repeat("y", 500), 0o644)
	e.commit("main", src)
	// Garbage gc would collect: a temporary file of an interrupted write.
	writeFile(t, filepath.Join(e.repo, "objects", ".tmp-interrupted"), "x", 0o644)
	img := t.TempDir() + "/img"
	mnt := t.TempDir()

	mistakes := map[string][][]string{
		"init":            {{"init", "extra"}},
		"commit":          {{"commit", "--branch", "main", src, "extra"}},
		"log":             {{"log", "main", "extra"}, {"log", "-n", "-5", "main"}, {"log", "-n", "0", "main"}},
		"show":            {{"show", "main", "extra"}},
		"branches":        {{"branches", "extra"}},
		"ls":              {{"ls", "main", "/", "extra"}},
		"cat":             {{"cat", "main", "/f", "extra"}},
		"diff":            {{"diff", "main", "main~1", "extra"}},
		"fsck":            {{"fsck", "extra"}, {"fsck", "quick"}},
		"gc":              {{"gc", "dry-run"}, {"gc", "--depth", "-5"}, {"gc", "--depth=-1", "--dry-run"}},
		"mount":           {{"mount", "main", mnt, "extra"}},
		"rollout":         {{"rollout", "main", "extra"}},
		"initramfs":       {{"initramfs", "--root", src, "-o", img, "extra"}},
		"digest":          {{"digest"}},
		"mkcomposefs":     {{"mkcomposefs", src, img, "extra"}, {"mkcomposefs", "--min-version", "-1", src, img}, {"mkcomposefs", "--max-version", "-3", src, img}, {"mkcomposefs", "--threads", "0", src, img}},
		"composefs-info":  {{"composefs-info"}, {"composefs-info", "nonsense", img}},
		"composefs-dump":  {{"composefs-dump", img}, {"composefs-dump", img, img + ".2", "extra"}},
		"mount.composefs": {{"mount.composefs", img, mnt, "extra"}},
	}
	// Every command the binary lists is covered.
	help := e.ok("--help")
	for _, m := range regexp.MustCompile(`(?m)^  ([a-z][a-z.-]*) `).FindAllStringSubmatch(help, -1) {
		if _, ok := mistakes[m[1]]; !ok {
			t.Errorf("command %s has no case here", m[1])
		}
	}
	before := snapshot(t, e.repo)
	for name, cases := range mistakes {
		for _, args := range cases {
			r := e.run(args...)
			if r.code != 2 {
				t.Errorf("%s: %v\nwant exit 2 (usage error)", name, r)
			}
			if !strings.Contains(r.stderr, "Usage:") {
				t.Errorf("%s %q: no usage text after the error:\n%s", name, args, r.stderr)
			}
		}
	}
	if after := snapshot(t, e.repo); after != before {
		t.Errorf("the refused commands changed the repository:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
