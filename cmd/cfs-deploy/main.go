// Command cfs-deploy commits directory trees into composefs images and rolls
// them out. Invoked as mkcomposefs, composefs-info, composefs-dump or
// mount.composefs (by a symlink, or as the first argument) it behaves like
// the upstream tool of that name.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
)

type command struct {
	summary string
	run     func(prog string, args []string) error
	usage   func(w io.Writer)
}

var commands = map[string]command{}

func register(name string, c command) { commands[name] = c }

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if _, ok := commands[name]; !ok {
		var err error
		if args, err = splitGlobal(args); err != nil {
			fmt.Fprintf(os.Stderr, "cfs-deploy: %v\n", err)
			os.Exit(2)
		}
		if len(args) == 0 {
			topUsage(os.Stderr)
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	switch name {
	case "-h", "--help", "help":
		topUsage(os.Stdout)
		return
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "cfs-deploy: unknown command %q\n", name)
		topUsage(os.Stderr)
		os.Exit(2)
	}
	cliutil.Exit(name, advise(c.run(name, args)), c.usage)
}

func topUsage(w io.Writer) {
	fmt.Fprintln(w, `Usage: cfs-deploy COMMAND [OPTIONS] [ARGS]

Commits directory trees into reproducible composefs images.

Commands:`)
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-18s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, `
Global options (before or after the command):
  --repo DIR      the repository (default from the configuration file,
                  else /sysroot/composefs)
  --config FILE   configuration file (default $CFS_DEPLOY_CONFIG, else
                  /etc/cfs-deploy/config.toml)

Run "cfs-deploy COMMAND --help" for a command's options. A symlink named
mkcomposefs, composefs-info, composefs-dump or mount.composefs pointing at
cfs-deploy runs that command.`)
}
