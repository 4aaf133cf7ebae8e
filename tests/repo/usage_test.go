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
		"status":          {{"status", "extra"}},
		"rollback":        {{"rollback", "extra"}},
		"undeploy":        {{"undeploy"}, {"undeploy", "-1"}, {"undeploy", "x"}, {"undeploy", "0", "1"}},
		"pin":             {{"pin"}, {"pin", "-2"}},
		"unpin":           {{"unpin", "0", "extra"}},
		"kargs":           {{"kargs", "extra"}, {"kargs", "--deployment", "-1"}},
		"cleanup":         {{"cleanup", "extra"}},
		"etc-diff":        {{"etc-diff", "0", "1"}, {"etc-diff", "-1"}},
		"mark-good":       {{"mark-good", "0"}},
		"finalize":        {{"finalize", "now"}},
		"pull":            {{"pull", "file:///nonexistent"}, {"pull", "/nonexistent", "main", "extra"}, {"pull", "--jobs", "0", "/x", "main"}},
		"push":            {{"push", "oci:" + mnt + "/oci"}, {"push", "oci:" + mnt + "/oci", "main", "extra"}},
		"keygen":          {{"keygen"}, {"keygen", mnt + "/k", "extra"}},
		"sign":            {{"sign", "main"}, {"sign", "--key", mnt + "/k", "main", "extra"}},
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

// TestBadNames: a branch name that reads as an option is refused, and a
// ~N suffix must be a plain number (it was read with Sscanf, which took
// "main~1x" for main~1 and "main~0x10" for main).
func TestBadNames(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "f"), strings.Repeat("x", 500), 0o644)
	for _, b := range []string{"-x", "os/-x", "-"} {
		if r := e.run("commit", "--branch", b, src); r.code != 2 || !strings.Contains(r.stderr, "branch name") {
			t.Errorf("commit to branch %q: %v\nwant a usage error about the branch name", b, r)
		}
	}
	if bs := e.ok("branches"); bs != "" {
		t.Errorf("branches after refused commits: %q", bs)
	}
	e.commit("main", src)
	writeFile(t, filepath.Join(src, "f"), strings.Repeat("y", 500), 0o644)
	e.commit("main", src)
	for _, ref := range []string{"main~1x", "main~0x10", "main~", "main~-1", "main~+1", "main~ 1", "main~1.0", "main~99999999999999999999"} {
		if r := e.run("show", ref); r.code != 1 || !strings.Contains(r.stderr, "~N") {
			t.Errorf("show %s: %v\nwant a refusal of the ~N suffix", ref, r)
		}
	}
	if e.ok("show", "--json", "main~1") == e.ok("show", "--json", "main") || e.ok("show", "--json", "main~0") != e.ok("show", "--json", "main") {
		t.Error("main~1 and main~0 do not resolve as they should")
	}
}

// TestAdvice: the command line says what to do about the errors the
// libraries report as sentinels.
func TestAdvice(t *testing.T) {
	e := &env{t: t, repo: t.TempDir(), config: filepath.Join(t.TempDir(), "config.toml")}
	writeFile(t, e.config, "", 0o644)
	if r := e.run("log", "main"); r.code != 1 || !strings.Contains(r.stderr, "not a cfs-deploy repository") || !strings.Contains(r.stderr, "cfs-deploy init") {
		t.Errorf("log outside a repository: %v", r)
	}
	e.repo = filepath.Join(e.repo, "secure")
	if r := e.run("init"); r.code != 0 && !strings.Contains(r.stderr, "give --insecure") {
		t.Errorf("secure init without fs-verity: %v\nwant advice to give --insecure", r)
	}
}
