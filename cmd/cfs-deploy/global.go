package main

import (
	"flag"

	"fmt"
	"os"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"

	"github.com/cfs-deploy/cfs-deploy/internal/config"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"golang.org/x/sys/unix"
)

// Global options may come before the command name ("cfs-deploy --repo R
// log main") or after it, among the command's own options.
var global struct {
	repo   string
	config string
}

// splitGlobal takes --repo and --config off the front of args.
func splitGlobal(args []string) ([]string, error) {
	for len(args) > 0 {
		a := args[0]
		var name, val string
		switch {
		case a == "--repo" || a == "--config" || a == "-repo" || a == "-config":
			if len(args) < 2 {
				return nil, fmt.Errorf("%s needs a value", a)
			}
			name, val, args = strings.TrimLeft(a, "-"), args[1], args[2:]
		case strings.HasPrefix(a, "--repo=") || strings.HasPrefix(a, "--config="):
			name, val, _ = strings.Cut(strings.TrimLeft(a, "-"), "=")
			args = args[1:]
		default:
			return args, nil
		}
		if name == "repo" {
			global.repo = val
		} else {
			global.config = val
		}
	}
	return args, nil
}

// repoFlags adds --repo and --config to a command's flags.
func repoFlags(fs *flag.FlagSet) {
	fs.StringVar(&global.repo, "repo", global.repo, "")
	fs.StringVar(&global.config, "config", global.config, "")
}

func loadConfig() (config.Config, error) {
	c, err := config.Load(global.config)
	if err != nil {
		return c, err
	}
	if global.repo != "" {
		c.Repo = global.repo
	}
	return c, nil
}

// openRepo opens the configured repository and says on stderr which mode
// it is in when quiet is false.
func openRepo(opts repo.OpenOptions, quiet bool) (*repo.Repo, config.Config, error) {
	c, err := loadConfig()
	if err != nil {
		return nil, c, err
	}
	r, err := repo.Open(c.Repo, opts)
	if err != nil {
		return nil, c, err
	}
	if !quiet {
		fmt.Fprintf(os.Stderr, "repository %s (%s)\n", r.Path, r.Mode())
	}
	return r, c, nil
}

// openForReading parses a read command's arguments, checks that it got
// between min and max operands (else the usage error want), and opens the
// repository shared and quietly. The caller closes it.
func openForReading(fs *flag.FlagSet, args []string, min, max int, want string) (*repo.Repo, []string, error) {
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if err := cliutil.CheckOperands(ops, min, max, want); err != nil {
		return nil, nil, err
	}
	r, _, err := openRepo(repo.OpenOptions{}, true)
	if err != nil {
		return nil, nil, err
	}
	return r, ops, nil
}

// treeOf resolves a user's name for a commit and loads its tree.
func treeOf(r *repo.Repo, name string) (*erofs.Node, error) {
	id, err := r.Resolve(name)
	if err != nil {
		return nil, err
	}
	_, root, err := r.CommitTree(id)
	return root, err
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// stderrf prints a line on standard error, for libraries' Logf options.
func stderrf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// stdoutf prints a line on standard output.
func stdoutf(format string, args ...any) { fmt.Printf(format+"\n", args...) }
