package cliutil

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestIntFlagRange(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	depth := Int(fs, "depth", 3, 0, math.MaxInt)
	n := Int(fs, "n", 0, 1, 10)
	if _, err := Parse(fs, []string{"--n", "10"}); err != nil || n.Value != 10 || !n.Given || depth.Given || depth.Value != 3 {
		t.Fatalf("n=%+v depth=%+v err=%v", n, depth, err)
	}
	for _, args := range [][]string{{"--depth", "-5"}, {"--depth=-1"}, {"--n", "0"}, {"--n", "11"}, {"--n", "1x"}, {"--n", "0x10"}} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		Int(fs, "depth", 3, 0, math.MaxInt)
		Int(fs, "n", 0, 1, 10)
		_, err := Parse(fs, args)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), strings.TrimLeft(strings.SplitN(args[0], "=", 2)[0], "-")) {
			t.Errorf("%q: %v, want a usage error naming the option", args, err)
		}
	}
}

func TestCheckOperands(t *testing.T) {
	if err := CheckOperands([]string{"a"}, 1, 1, "give one"); err != nil {
		t.Fatal(err)
	}
	err := CheckOperands([]string{"a", "dry-run"}, 0, 1, "give one")
	var ue *UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), `"dry-run"`) {
		t.Errorf("extra operand: %v", err)
	}
	if err := CheckOperands(nil, 1, -1, "give files"); !errors.As(err, &ue) {
		t.Errorf("missing operand: %v", err)
	}
}

// TestExitReported: a command that has already said why it failed returns
// ErrReported (wrapped or not), not an empty error.
func TestExitReported(t *testing.T) {
	if os.Getenv("CLIUTIL_EXIT_CHILD") != "" {
		Exit("prog", fmt.Errorf("fsck: %w", ErrReported), func(io.Writer) {})
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestExitReported$")
	cmd.Env = append(os.Environ(), "CLIUTIL_EXIT_CHILD=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || len(out) != 0 {
		t.Errorf("Exit(ErrReported): %v, output %q; want exit 1 and nothing printed", err, out)
	}
}
