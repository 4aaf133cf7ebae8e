//go:build crashpoints

package crashpoint

import (
	"os"

	"golang.org/x/sys/unix"
)

// Enabled reports whether this binary was built with the crash points.
const Enabled = true

var at = os.Getenv(Env)

// Here kills the process with SIGKILL if Env names point.
func Here(point string) {
	if at == "" || at != point {
		return
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	select {} // SIGKILL cannot be caught; wait for it to land
}
