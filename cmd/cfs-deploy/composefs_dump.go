package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/composefs"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
)

func init() {
	register("composefs-dump", command{
		summary: "read a composefs image and write it again at its format version",
		run:     runComposefsDump,
		usage: func(w io.Writer) {
			fmt.Fprintln(w, `Usage: composefs-dump IMAGE OUT

Reads the composefs image IMAGE and writes the same tree as a new image to
OUT ("-" for standard output), at the format version IMAGE has. An image
upstream mkcomposefs wrote comes out byte for byte the same. OUT is
replaced atomically.`)
		},
	})
}

func runComposefsDump(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	switch len(ops) {
	case 0:
		return cliutil.Usagef("no source path specified")
	case 1:
		return cliutil.Usagef("no destination path specified")
	}
	if err := cliutil.CheckOperands(ops, 2, 2, "give IMAGE and OUT"); err != nil {
		return err
	}
	img, err := erofs.ReadImageFile(ops[0])
	if err != nil {
		return fmt.Errorf("load %s: %w", ops[0], err)
	}
	v := erofs.WriteOptions{MinVersion: img.Version, MaxVersion: img.Version}
	_, err = composefs.WriteFile(ops[1], img.Root, v)
	return err
}
