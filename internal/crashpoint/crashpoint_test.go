package crashpoint

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestHere runs this test binary again with Env naming a point and checks
// that it dies there exactly when the crash points are compiled in.
func TestHere(t *testing.T) {
	if os.Getenv("CRASHPOINT_CHILD") != "" {
		Here("other")
		Here("the-point")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHere$")
	cmd.Env = append(os.Environ(), "CRASHPOINT_CHILD=1", Env+"=the-point")
	err := cmd.Run()
	killed := cmd.ProcessState != nil && cmd.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
	if killed != Enabled {
		t.Fatalf("crash points compiled in: %v; the child was killed: %v (%v)", Enabled, killed, err)
	}
}
