package initboot

import (
	"errors"
	"io"

	"github.com/cfs-deploy/cfs-deploy/internal/blockdev"
)

// fsInfo is what a superblock says about a file system.
type fsInfo = blockdev.Filesystem

// probeFS identifies the file system on r. A device that holds none that
// cfs-init knows gives an empty fsInfo and no error, so that probing every
// block device while looking for UUID= or LABEL= skips it quietly; read
// errors are returned.
func probeFS(r io.ReaderAt) (fsInfo, error) {
	fs, err := blockdev.Probe(r)
	if errors.Is(err, blockdev.ErrUnknown) {
		return fsInfo{}, nil
	}
	return fs, err
}
