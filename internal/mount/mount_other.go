//go:build !linux

package mount

import "errors"

var errNotLinux = errors.New("composefs mounts need Linux")

// Mount is only implemented on Linux.
func Mount(target string, opts Options) error { return errNotLinux }
