package bootcfg

import (
	"slices"
	"testing"
)

func kv(k, v string) Param { return Param{Key: k, Value: v, HasValue: true} }
func flag(k string) Param  { return Param{Key: k} }

// The expectations follow the kernel's next_arg() (lib/cmdline.c), worked
// through by hand for each input.
func TestParseCmdline(t *testing.T) {
	tests := []struct {
		in   string
		want Cmdline
	}{
		{"", nil},
		{"   \t\n", nil},
		{"ro", Cmdline{flag("ro")}},
		{"root=/dev/vda2 ro quiet", Cmdline{kv("root", "/dev/vda2"), flag("ro"), flag("quiet")}},
		// Quotes group and the ones around the value are removed.
		{`a="b c" d`, Cmdline{kv("a", "b c"), flag("d")}},
		// A quote opening the argument is removed with the last one.
		{`"e=f g"`, Cmdline{kv("e", "f g")}},
		{`"a b=c" d`, Cmdline{kv("a b", "c"), flag("d")}},
		{`"quiet"`, Cmdline{flag("quiet")}},
		// An empty value is a value.
		{`x= y`, Cmdline{kv("x", ""), flag("y")}},
		{`x=`, Cmdline{kv("x", "")}},
		{`k=""`, Cmdline{kv("k", "")}},
		{`k="`, Cmdline{kv("k", "")}},
		{`"k="`, Cmdline{kv("k", "")}},
		// Leading, trailing and repeated whitespace of every kind.
		{"  a  \t b\n\r\v\fc  ", Cmdline{flag("a"), flag("b"), flag("c")}},
		// /proc/cmdline ends in a newline.
		{"console=ttyS0\n", Cmdline{kv("console", "ttyS0")}},
		// The kernel's isspace() includes Latin-1 no-break space.
		{"a\xa0b", Cmdline{flag("a"), flag("b")}},
		// Quotes inside an argument are kept, but still group.
		{`a"b c"d e`, Cmdline{flag(`a"b c"d`), flag("e")}},
		{`k="a"b`, Cmdline{kv("k", `a"b`)}},
		{`k=a"b c" d`, Cmdline{kv("k", `a"b c"`), flag("d")}},
		// An unterminated quote runs to the end of the line.
		{`k="a b c`, Cmdline{kv("k", "a b c")}},
		{`x k="a b c`, Cmdline{flag("x"), kv("k", "a b c")}},
		{`"k=v""`, Cmdline{kv("k", `v"`)}},
		// Only the first '=' splits; one at offset 0 does not count.
		{"a=b=c", Cmdline{kv("a", "b=c")}},
		{"=foo", Cmdline{flag("=foo")}},
		{"=a=b", Cmdline{kv("=a", "b")}},
		{`""`, Cmdline{flag("")}},
		{`"`, Cmdline{flag("")}},
		// Keys are verbatim: case and '-'/'_' matter.
		{"Foo_bar=1 foo-bar=2", Cmdline{kv("Foo_bar", "1"), kv("foo-bar", "2")}},
		// "--" is kept as an argument; the kernel part ends there.
		{"ro -- single x=1", Cmdline{flag("ro"), flag("--"), flag("single"), kv("x", "1")}},
		// Nothing after a NUL exists for the kernel.
		{"a b\x00c d", Cmdline{flag("a"), flag("b")}},
	}
	for _, tt := range tests {
		got := ParseCmdline(tt.in)
		if !slices.Equal(got, tt.want) {
			t.Errorf("ParseCmdline(%q) = %#v, want %#v", tt.in, got, tt.want)
		}
	}
}

func TestSplitInitArgs(t *testing.T) {
	tests := []struct{ in, kernel, init string }{
		{"root=/dev/sda ro", "root=/dev/sda ro", ""},
		{"root=/dev/sda ro -- single x=1", "root=/dev/sda ro", "single x=1"},
		{"ro --", "ro", ""},
		{"-- a", "", "a"},
		{`ro "--" a`, "ro", "a"},
		// "--" with a value, or inside another argument, does not split.
		{"--=1 a", "--=1 a", ""},
		{`k="x -- y" z`, `k="x -- y" z`, ""},
		// Only the first "--" counts; the init part is passed on as written.
		{"a -- b -- c", "a", "b -- c"},
		{"a\t--\t b  c ", "a", "b  c "},
	}
	for _, tt := range tests {
		k, i := SplitInitArgs(tt.in)
		if k != tt.kernel || i != tt.init {
			t.Errorf("SplitInitArgs(%q) = %q, %q; want %q, %q", tt.in, k, i, tt.kernel, tt.init)
		}
	}
}

func TestKernelAndInitArgs(t *testing.T) {
	c := ParseCmdline("ro root=/dev/sda -- single rw")
	if k := c.Kernel(); !slices.Equal(k, Cmdline{flag("ro"), kv("root", "/dev/sda")}) {
		t.Errorf("Kernel() = %v", k)
	}
	init, ok := c.InitArgs()
	if !ok || !slices.Equal(init, Cmdline{flag("single"), flag("rw")}) {
		t.Errorf("InitArgs() = %v, %v", init, ok)
	}
	if _, ok := ParseCmdline("ro").InitArgs(); ok {
		t.Errorf("InitArgs() without -- reported one")
	}
	// Arguments after "--" belong to init and are not kernel arguments.
	if _, ok := c.Get("rw"); ok {
		t.Errorf("Get found an init argument")
	}
}

func TestGet(t *testing.T) {
	c := ParseCmdline("console=tty0 quiet console=ttyS0,115200 empty= -- console=init")
	if v, ok := c.Get("console"); !ok || v != "ttyS0,115200" {
		t.Errorf("Get(console) = %q, %v; want the last one", v, ok)
	}
	if v, ok := c.Get("quiet"); !ok || v != "" {
		t.Errorf("Get(quiet) = %q, %v", v, ok)
	}
	if v, ok := c.Get("empty"); !ok || v != "" {
		t.Errorf("Get(empty) = %q, %v", v, ok)
	}
	if _, ok := c.Get("Console"); ok {
		t.Errorf("Get is not case-sensitive")
	}
	if _, ok := c.Get("missing"); ok {
		t.Errorf("Get(missing) found something")
	}
	if got := c.GetAll("console"); !slices.Equal(got, []string{"tty0", "ttyS0,115200"}) {
		t.Errorf("GetAll(console) = %q", got)
	}
	if got := c.GetAll("missing"); got != nil {
		t.Errorf("GetAll(missing) = %q", got)
	}
}

func TestCmdlineString(t *testing.T) {
	tests := []struct {
		in   Cmdline
		want string
	}{
		{nil, ""},
		{Cmdline{flag("ro"), kv("root", "/dev/sda")}, "ro root=/dev/sda"},
		{Cmdline{kv("k", "a b")}, `k="a b"`},
		{Cmdline{kv("k", "tab\there")}, "k=\"tab\there\""},
		{Cmdline{kv("a b", "c"), flag("d")}, `"a b=c" d`},
		{Cmdline{flag("a b")}, `"a b"`},
		{Cmdline{kv("k", "")}, "k="},
		{Cmdline{flag("")}, `""`},
		{Cmdline{kv("k", `"x`), flag("y")}, `"k=""x" y`},
		{Cmdline{kv("k", `a"b c"`)}, `k=a"b c"`},
		{Cmdline{flag("ro"), flag("--"), flag("single")}, "ro -- single"},
	}
	for _, tt := range tests {
		got := tt.in.String()
		if got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.in, got, tt.want)
		}
		if back := ParseCmdline(got); !slices.Equal(back, tt.in) {
			t.Errorf("ParseCmdline(%q) = %#v, want %#v", got, back, tt.in)
		}
	}
}

// Whatever the kernel accepts, String must give back text that parses to
// the same arguments.
func TestCmdlineStringRoundTrip(t *testing.T) {
	for _, in := range []string{
		`a="b c" d`, `"e=f g"`, `x= y`, `k="a"b`, `"k=v""`, `k="a b c`, `a"b c"d e`,
		`=a=b`, `""`, `"a b=c" d`, "a\xa0b", `k=""" x`, `"k="v w""`, `"" "" ""`,
	} {
		c := ParseCmdline(in)
		s := c.String()
		if back := ParseCmdline(s); !slices.Equal(back, c) {
			t.Errorf("%q: parsed %#v, String %q reparsed as %#v", in, c, s, back)
		}
	}
}
