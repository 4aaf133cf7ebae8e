package bootcfg

import (
	"fmt"
	"slices"
	"strings"
)

// The editors below back --karg style options. Each one only touches the
// kernel part of the line (before "--") and is idempotent: applying the
// same edit twice gives the same line as applying it once.

// Add appends each argument in arg (parsed like a command line, so
// `foo="a b"` is one argument) unless an identical argument is already
// present. It never replaces: use Replace to change a value.
func (c *Cmdline) Add(arg string) error {
	params := ParseCmdline(arg)
	if len(params) == 0 {
		return fmt.Errorf("add kernel argument %q: empty", arg)
	}
	for _, p := range params {
		if p.isSeparator() {
			return fmt.Errorf("add kernel argument %q: \"--\" would end the kernel arguments", arg)
		}
		if !p.representable() {
			return fmt.Errorf("add kernel argument %q: unbalanced quotes", arg)
		}
	}
	var add []Param
	for _, p := range params {
		if !slices.Contains(c.Kernel(), p) && !slices.Contains(add, p) {
			add = append(add, p)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := c.checkAppend(); err != nil {
		return fmt.Errorf("add kernel argument %q: %w", arg, err)
	}
	for _, p := range add {
		c.insert(p)
	}
	return nil
}

// Replace sets key to value: the first argument named key gets the new
// value, any later ones are removed, and if there is none the argument is
// appended.
func (c *Cmdline) Replace(key, value string) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("replace kernel argument %s: %w", key, err)
	}
	p := Param{Key: key, Value: value, HasValue: true}
	if !p.representable() {
		return fmt.Errorf("replace kernel argument %s: value %q: unbalanced quotes", key, value)
	}
	out := make(Cmdline, 0, len(*c)+1)
	done := false
	end := c.separator()
	for i, q := range *c {
		if (end < 0 || i < end) && q.Key == key {
			if !done {
				out = append(out, p)
				done = true
			}
			continue
		}
		out = append(out, q)
	}
	if !done {
		if err := out.checkAppend(); err != nil {
			return fmt.Errorf("replace kernel argument %s: %w", key, err)
		}
		out.insert(p)
	}
	*c = out
	return nil
}

// Remove deletes every kernel argument named key, with or without a value,
// and returns how many it removed.
func (c *Cmdline) Remove(key string) int {
	return c.removeIf(func(p Param) bool { return p.Key == key })
}

// RemoveExact deletes every kernel argument identical to one in arg (so
// "console=ttyS0" removes that console and keeps "console=tty0") and
// returns how many it removed.
func (c *Cmdline) RemoveExact(arg string) int {
	targets := ParseCmdline(arg)
	return c.removeIf(func(p Param) bool { return slices.Contains(targets, p) })
}

func (c *Cmdline) removeIf(match func(Param) bool) int {
	end := c.separator()
	out := make(Cmdline, 0, len(*c))
	n := 0
	for i, p := range *c {
		if (end < 0 || i < end) && match(p) {
			n++
			continue
		}
		out = append(out, p)
	}
	*c = out
	return n
}

// checkAppend reports whether an argument can be added at the end of the
// kernel part. It cannot if the line ends with an argument that leaves a
// quote open (possible only at the very end), since that argument would
// swallow whatever came after it.
func (c Cmdline) checkAppend() error {
	if c.separator() >= 0 || len(c) == 0 {
		return nil
	}
	if last := c[len(c)-1]; !last.representable() {
		return fmt.Errorf("the last argument %q has an unmatched quote", shorten(last.String()))
	}
	return nil
}

// insert adds p at the end of the kernel part, before any "--".
func (c *Cmdline) insert(p Param) {
	if i := c.separator(); i >= 0 {
		*c = slices.Insert(*c, i, p)
		return
	}
	*c = append(*c, p)
}

// checkKey rejects keys that could not be read back as the same key.
func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("empty key")
	case key == "--":
		return fmt.Errorf("\"--\" is not a key")
	case strings.ContainsAny(key, "=\"\x00"):
		return fmt.Errorf("key %q contains '=', '\"' or NUL", key)
	case strings.IndexFunc(key, isKernelSpaceRune) >= 0 || strings.IndexByte(key, 0xa0) >= 0:
		return fmt.Errorf("key %q contains whitespace", key)
	}
	return nil
}
