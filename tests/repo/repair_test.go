package repo

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInsecureDamagedObjectRepaired: in a repository without fs-verity an
// object damaged in place (same size) is not trusted by the next commit
// of the same content, which replaces it, unless --trust-existing says to
// skip that check; fsck --repair replaces damaged objects from a source
// tree or a tar stream.
func TestInsecureDamagedObjectRepaired(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	writeFile(t, filepath.Join(src, "etc", "big.conf"), strings.Repeat("configuration\n", 1000), 0o644)
	writeFile(t, filepath.Join(src, "usr", "bin", "tool"), strings.Repeat("\x7fELF tool ", 3000), 0o755)
	e.commit("main", src)
	conf, tool := e.objectOf("main", "/etc/big.conf"), e.objectOf("main", "/usr/bin/tool")
	damaged := func() []string {
		t.Helper()
		rep, _ := e.fsck()
		var ps []string
		for _, p := range rep.Problems {
			ps = append(ps, p.Path)
		}
		return ps
	}

	// --trust-existing: the damaged copy stays (the documented trade).
	flipByte(t, conf, 100)
	e.ok("commit", "--branch", "main", "--trust-existing", src)
	if ps := damaged(); len(ps) != 1 || ps[0] != conf {
		t.Fatalf("fsck after a --trust-existing commit: %q, want only %s", ps, conf)
	}
	// By default the commit checks what it would reuse, and replaces it.
	e.commit("main", src)
	if ps := damaged(); len(ps) != 0 {
		t.Fatalf("fsck after re-committing the content: %q, want the object repaired", ps)
	}

	// fsck --repair from the source tree.
	flipByte(t, conf, 7)
	flipByte(t, tool, 20000)
	r := e.run("fsck", "--repair", src)
	if r.code != 0 || !strings.Contains(r.stderr, "repaired 2") {
		t.Errorf("fsck --repair %s: %v\nwant both objects repaired and exit 0", src, r)
	}
	if ps := damaged(); len(ps) != 0 {
		t.Fatalf("fsck after --repair from a tree: %q", ps)
	}

	// ... and from a tar stream.
	flipByte(t, tool, 5)
	tarFile := filepath.Join(t.TempDir(), "src.tar")
	if out, err := exec.Command("tar", "-cf", tarFile, "-C", src, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	if r := e.run("fsck", "--repair", tarFile); r.code != 0 || !strings.Contains(r.stderr, "repaired 1") {
		t.Errorf("fsck --repair %s: %v", tarFile, r)
	}
	if ps := damaged(); len(ps) != 0 {
		t.Fatalf("fsck after --repair from a tar: %q", ps)
	}

	// A source without the content repairs nothing and says what is left.
	flipByte(t, tool, 5)
	other := t.TempDir()
	writeFile(t, filepath.Join(other, "unrelated"), strings.Repeat("u", 5000), 0o644)
	if r := e.run("fsck", "--repair", other); r.code != 1 || !strings.Contains(r.stdout, tool) {
		t.Errorf("fsck --repair from a tree without the content: %v", r)
	}
}
