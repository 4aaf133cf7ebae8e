package mount

import (
	"fmt"
	"os"
)

// makeTempDir creates a private (0700) directory to mount a layer on for
// the moment the overlay is being set up. /run is preferred: it exists
// early in boot and is normally a tmpfs, so a crash leaves nothing behind.
func makeTempDir() (string, error) {
	parent := "/run"
	if fi, err := os.Stat(parent); err != nil || !fi.IsDir() {
		parent = os.TempDir()
	}
	dir, err := os.MkdirTemp(parent, ".cfs-mount-")
	if err != nil {
		return "", fmt.Errorf("create temporary mount directory: %w", err)
	}
	return dir, nil
}
