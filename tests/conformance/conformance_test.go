package conformance

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMissingAssets runs Dir in a module without ../shared beside it: a
// clear skip normally, a failure under CI=true.
func TestMissingAssets(t *testing.T) {
	if os.Getenv("CONFORMANCE_CHILD") != "" {
		Dir(t)
		t.Log("Dir returned")
		return
	}
	mod := filepath.Join(t.TempDir(), "clone")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, ci := range []string{"", "true"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissingAssets$", "-test.v")
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "CONFORMANCE_CHILD=1", "CI="+ci)
		out, err := cmd.CombinedOutput()
		text := string(out)
		if !strings.Contains(text, "conformance assets not found at "+filepath.Join(mod, "..", "shared")) {
			t.Errorf("CI=%q: the message does not say where the assets were looked for:\n%s", ci, text)
		}
		switch ci {
		case "":
			if err != nil || !strings.Contains(text, "--- SKIP") {
				t.Errorf("without CI: %v, want a skip:\n%s", err, text)
			}
		default:
			if err == nil || !strings.Contains(text, "--- FAIL") {
				t.Errorf("CI=true: %v, want a failure:\n%s", err, text)
			}
		}
	}
}

// TestAssetsHere: in this checkout the assets are found and load.
func TestAssetsHere(t *testing.T) {
	assets := Assets(t)
	if len(assets) < 10 {
		t.Fatalf("%d assets", len(assets))
	}
	for _, a := range assets {
		if len(a.Dump) == 0 || len(a.SHA256) != 64 {
			t.Errorf("%s: %d bytes, sha256 %q", a.Name, len(a.Dump), a.SHA256)
		}
	}
}
