// Package cliutil holds what the command front ends share: GNU-style
// argument parsing (options may follow operands, as getopt_long allows) and
// error reporting with exit codes.
package cliutil

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// UsageError marks a mistake in the command line: the command prints its
// usage and exits with status 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{fmt.Sprintf(format, args...)}
}

// Parse parses args with fs, allowing options after operands; "--" ends
// option parsing. It returns the operands in order.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var rest []string
	for i, a := range args {
		if a == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
	}
	var operands []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &UsageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(operands, rest...), nil
		}
		operands = append(operands, args[0])
		args = args[1:]
	}
}

// ErrReported is returned by a command that has failed and already said
// why on its output (fsck's list of problems): Exit exits 1 quietly.
var ErrReported = errors.New("failure already reported")

// Exit prints err the way command-line tools do and exits: 0 for nil, 2 for
// usage errors (after the usage text), 1 otherwise.
func Exit(prog string, err error, usage func(io.Writer)) {
	if err == nil {
		os.Exit(0)
	}
	if errors.Is(err, flag.ErrHelp) {
		usage(os.Stdout)
		os.Exit(0)
	}
	if errors.Is(err, ErrReported) {
		os.Exit(1)
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "%s: %s\n", prog, ue.Msg)
		usage(os.Stderr)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
	os.Exit(1)
}
