package cliutil

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"strconv"
)

// CheckOperands refuses fewer than min or more than max operands (max < 0:
// no limit) with a usage error; want says what the command takes.
func CheckOperands(ops []string, min, max int, want string) error {
	switch {
	case max >= 0 && len(ops) > max:
		return Usagef("unexpected argument %q (%s)", ops[max], want)
	case len(ops) < min:
		return Usagef("%s", want)
	}
	return nil
}

// IntFlag is an integer option limited to Min..Max: a value outside is a
// usage error naming the option, rather than something quietly replaced
// by a default.
type IntFlag struct {
	Value, Min, Max int
	// Given is set when the option was on the command line.
	Given bool
}

// Int defines an IntFlag on fs.
func Int(fs *flag.FlagSet, name string, def, min, max int) *IntFlag {
	f := &IntFlag{Value: def, Min: min, Max: max}
	fs.Var(f, name, "")
	return f
}

func (f *IntFlag) String() string {
	if f == nil {
		return "0"
	}
	return strconv.Itoa(f.Value)
}

func (f *IntFlag) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not a whole number")
	}
	if v < f.Min || v > f.Max {
		if f.Max == math.MaxInt {
			return fmt.Errorf("must be at least %d", f.Min)
		}
		return fmt.Errorf("must be %d..%d", f.Min, f.Max)
	}
	f.Value, f.Given = v, true
	return nil
}
