package main

import (
	"io"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
)

func exit(prog string, err error, usage func(io.Writer)) {
	cliutil.Exit(prog, err, usage)
}
