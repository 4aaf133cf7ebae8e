package cliutil

import (
	"errors"
	"flag"
	"reflect"
	"testing"
)

func TestParsePermutes(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	v := fs.Bool("v", false, "")
	n := fs.Int("n", 0, "")
	ops, err := Parse(fs, []string{"a", "--v", "b", "--n=3", "--", "--v", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if !*v || *n != 3 || !reflect.DeepEqual(ops, []string{"a", "b", "--v", "c"}) {
		t.Fatalf("v=%v n=%d operands=%q", *v, *n, ops)
	}
}

func TestParseUnknownIsUsageError(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	_, err := Parse(fs, []string{"x", "--nope"})
	var ue *UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("got %v, want a UsageError", err)
	}
}
