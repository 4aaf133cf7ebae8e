package main

import (
	"errors"
	"fmt"

	"github.com/cfs-deploy/cfs-deploy/internal/deploy"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
)

// advice is what the command line says to do about the libraries'
// sentinel errors; the libraries themselves only say what is wrong.
var advice = []struct {
	err  error
	what string
}{
	{repo.ErrNotRepository, "create one with cfs-deploy init, or name another with --repo"},
	{repo.ErrNoVerity, "give --insecure to create a repository that computes digests in userspace"},
	{repo.ErrLostVerity, "restore meta.json with its fs-verity, or copy the repository back to a filesystem with fs-verity"},
	{repo.ErrForeignStreams, "collect garbage with cfsctl gc"},
	{repo.ErrUnsafeToCollect, "run cfs-deploy fsck"},
	{deploy.ErrInsecureRepository, "give --insecure to roll out anyway; the entry will say composefs=?<digest>"},
	{deploy.ErrNoRootDevice, "give the root device with --root"},
	{deploy.ErrNoInit, "build it with go build ./cmd/cfs-init, or name it with --cfs-init"},
}

// advise adds what to do to an error that has a known cause: the first
// matching entry of advice.
func advise(err error) error {
	for _, a := range advice {
		if errors.Is(err, a.err) {
			return fmt.Errorf("%w; %s", err, a.what)
		}
	}
	return err
}
