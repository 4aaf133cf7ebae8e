package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// In an insecure repository a damaged object under /etc is found while it
// is copied: the rollout fails and takes back the half-made deployment.
func TestRolloutRefusesDamagedObject(t *testing.T) {
	f := newFixture(t)
	a := f.commit("os", "1.0")
	_, root, err := f.r.CommitTree(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	n := mustResolve(t, root, "/etc/big.conf").Target()
	if !n.IsExternal() || n.Digest.IsZero() {
		t.Fatal("etc/big.conf is not an object; the test proves nothing")
	}
	p := f.r.ObjectPath(n.Digest)
	bad := readBytes(t, p)
	bad[len(bad)-2] ^= 1 // same size: only the digest can tell
	if err := os.WriteFile(p, bad, 0o644); err != nil {
		t.Fatal(err)
	}

	_, err = f.rollout("os")
	var mm *verity.MismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("rollout with a damaged object: %v, want a digest mismatch", err)
	}
	t.Logf("rollout: %v", err)
	if _, err := os.Stat(StateDir(f.sysroot, a.Image)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left behind: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(f.sysroot, "state", "deploy")); len(ents) != 0 {
		t.Errorf("left in state/deploy: %v", ents)
	}
	checkNoTemps(t, f)
}
