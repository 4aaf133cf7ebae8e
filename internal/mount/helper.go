package mount

import (
	"fmt"
	"strings"
)

// HelperArgs is the parsed command line of mount.composefs:
//
//	mount.composefs [-t composefs] [-o OPTIONS] IMAGE MOUNTPOINT
//
// and what mount(8) adds when it runs the helper for `mount -t composefs`:
// `SPEC DIR [-sfnv] [-N namespace] [-o options] [-t type.subtype]`, with
// the options possibly after the operands.
type HelperArgs struct {
	Options Options // Options.Image is the IMAGE operand
	Target  string
	Fake    bool // -f: check everything, mount nothing
	Verbose bool // -v
	Help    bool // -h or --help; nothing else is checked
}

// ParseHelperArgs parses args (without the program name). Errors are
// mistakes in the command line.
func ParseHelperArgs(args []string) (*HelperArgs, error) {
	var (
		h        HelperArgs
		operands []string
		optStrs  []string
		sloppy   bool
	)
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			operands = append(operands, args[i+1:]...)
			i = len(args)
			continue
		case a == "--help":
			return &HelperArgs{Help: true}, nil
		case strings.HasPrefix(a, "--"):
			return nil, fmt.Errorf("unknown option %s", a)
		case len(a) < 2 || a[0] != '-':
			operands = append(operands, a)
			continue
		}
		// A cluster of short options; -o, -t and -N take a value, either
		// the rest of the cluster or the next argument.
		for j := 1; j < len(a); j++ {
			c := a[j]
			switch c {
			case 'h':
				return &HelperArgs{Help: true}, nil
			case 's':
				sloppy = true
			case 'f':
				h.Fake = true
			case 'n':
				// No /etc/mtab to skip writing; nothing to do.
			case 'v':
				h.Verbose = true
			case 'o', 't', 'N':
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return nil, fmt.Errorf("option -%c needs an argument", c)
					}
					i++
					val = args[i]
				}
				switch c {
				case 'o':
					// Checked alone, so that a trailing backslash
					// cannot escape the comma that joins them.
					if _, err := splitOptions(val); err != nil {
						return nil, err
					}
					optStrs = append(optStrs, val)
				case 't':
					if val != "composefs" {
						return nil, fmt.Errorf("unsupported filesystem type %q (only composefs)", val)
					}
				case 'N':
					// Entering another mount namespace takes a
					// single-threaded process, which a Go program is not.
					return nil, fmt.Errorf("-N (mount namespace) is not supported")
				}
				j = len(a)
			default:
				return nil, fmt.Errorf("unknown option -%c", c)
			}
		}
	}
	switch {
	case len(operands) < 2:
		return nil, fmt.Errorf("expected IMAGE and MOUNTPOINT, got %d operand(s)", len(operands))
	case len(operands) > 2:
		return nil, fmt.Errorf("too many operands: %q", operands[2:])
	case operands[0] == "" || operands[1] == "":
		return nil, fmt.Errorf("empty IMAGE or MOUNTPOINT")
	}
	// Several -o accumulate, as with mount(8).
	opts, err := ParseOptions(strings.Join(optStrs, ","), sloppy)
	if err != nil {
		return nil, err
	}
	opts.Image = operands[0]
	h.Options = opts
	h.Target = operands[1]
	return &h, nil
}
