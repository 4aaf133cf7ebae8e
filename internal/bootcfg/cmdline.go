package bootcfg

import "strings"

// Param is one kernel command line argument: "key", or "key=value" with the
// quotes the kernel strips already removed.
type Param struct {
	Key      string
	Value    string
	HasValue bool // "key=" has an empty value; "key" has none
}

// Cmdline is a kernel command line in order. It keeps every token,
// including a "--" separator and the init arguments after it, so that
// String gives back an equivalent line; lookups and edits only look at the
// kernel part before "--".
type Cmdline []Param

// ParseCmdline splits s the way the kernel's next_arg() does (lib/cmdline.c):
//
//   - arguments are separated by runs of whitespace (the kernel's isspace,
//     which includes byte 0xA0);
//   - a double quote toggles quoting, and whitespace inside quotes does not
//     separate; quotes are kept except a quote that opens the argument or
//     opens the value, together with a quote that ends the argument, so
//     `key="a b"` and `"key=a b"` both give key / `a b`;
//   - the key ends at the first '='; a '=' as the very first character does
//     not count, because the kernel uses offset 0 to mean "no '='";
//   - nothing after a NUL byte exists, as the kernel works on a C string.
//
// Keys are kept verbatim: no case folding and no '-'/'_' equivalence.
func ParseCmdline(s string) Cmdline {
	s = cutNUL(s)
	var c Cmdline
	for _, t := range tokenize(s) {
		c = append(c, t.param)
	}
	return c
}

// SplitInitArgs splits a command line at the first "--" argument, as the
// kernel does: what comes before is for the kernel, what comes after is
// handed to init. Both parts are returned as written (the kernel part
// without trailing whitespace); init is "" when there is no "--".
func SplitInitArgs(s string) (kernel, init string) {
	s = cutNUL(s)
	for _, t := range tokenize(s) {
		if t.param.isSeparator() {
			return strings.TrimRightFunc(s[:t.start], isKernelSpaceRune), s[t.next:]
		}
	}
	return s, ""
}

// Kernel returns the arguments before the first "--".
func (c Cmdline) Kernel() Cmdline {
	if i := c.separator(); i >= 0 {
		return c[:i:i]
	}
	return c
}

// InitArgs returns the arguments after the first "--", which the kernel
// passes to init, and whether there was a "--" at all.
func (c Cmdline) InitArgs() (Cmdline, bool) {
	if i := c.separator(); i >= 0 {
		return c[i+1:], true
	}
	return nil, false
}

// Get returns the value of the last kernel argument named key; the last one
// wins because that is what the kernel does for nearly every parameter. A
// flag without '=' gives "", true.
func (c Cmdline) Get(key string) (string, bool) {
	k := c.Kernel()
	for i := len(k) - 1; i >= 0; i-- {
		if k[i].Key == key {
			return k[i].Value, true
		}
	}
	return "", false
}

// GetAll returns the values of every kernel argument named key, in order,
// for parameters that may be given more than once (composefs=, console=).
func (c Cmdline) GetAll(key string) []string {
	var vals []string
	for _, p := range c.Kernel() {
		if p.Key == key {
			vals = append(vals, p.Value)
		}
	}
	return vals
}

// String returns the command line with single spaces between arguments,
// quoting where needed so that ParseCmdline gives the same arguments back.
func (c Cmdline) String() string {
	var b strings.Builder
	for i, p := range c {
		if i > 0 {
			b.WriteByte(' ')
		}
		text, _ := p.format(i == len(c)-1)
		b.WriteString(text)
	}
	return b.String()
}

// String returns the argument as it would be written on a command line,
// quoted if needed.
func (p Param) String() string {
	text, _ := p.format(true)
	return text
}

func (p Param) isSeparator() bool { return p.Key == "--" && !p.HasValue }

func (c Cmdline) separator() int {
	for i, p := range c {
		if p.isSeparator() {
			return i
		}
	}
	return -1
}

func cutNUL(s string) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return s[:i]
	}
	return s
}
