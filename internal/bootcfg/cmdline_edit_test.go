package bootcfg

import (
	"slices"
	"testing"
)

func TestCmdlineEdits(t *testing.T) {
	tests := []struct {
		name string
		in   string
		edit func(c *Cmdline) error
		want string
	}{
		{"add", "ro", func(c *Cmdline) error { return c.Add("quiet") }, "ro quiet"},
		{"add present", "ro quiet", func(c *Cmdline) error { return c.Add("quiet") }, "ro quiet"},
		{"add second value", "console=tty0", func(c *Cmdline) error { return c.Add("console=ttyS0") }, "console=tty0 console=ttyS0"},
		{"add several", "ro", func(c *Cmdline) error { return c.Add(`quiet foo="a b"`) }, `ro quiet foo="a b"`},
		{"add before init args", "ro -- single", func(c *Cmdline) error { return c.Add("quiet") }, "ro quiet -- single"},
		{"add ignores init args", "ro -- quiet", func(c *Cmdline) error { return c.Add("quiet") }, "ro quiet -- quiet"},
		{"replace", "a=1 b a=2 c", func(c *Cmdline) error { return c.Replace("a", "3") }, "a=3 b c"},
		{"replace flag", "rw quiet", func(c *Cmdline) error { return c.Replace("quiet", "1") }, "rw quiet=1"},
		{"replace absent", "ro", func(c *Cmdline) error { return c.Replace("root", "/dev/sda") }, "ro root=/dev/sda"},
		{"replace quotes", "ro", func(c *Cmdline) error { return c.Replace("x", "a b") }, `ro x="a b"`},
		{"replace before init args", "ro -- a=1", func(c *Cmdline) error { return c.Replace("a", "2") }, "ro a=2 -- a=1"},
		{"remove", "a=1 b a c=2", func(c *Cmdline) error { c.Remove("a"); return nil }, "b c=2"},
		{"remove keeps init args", "a -- a", func(c *Cmdline) error { c.Remove("a"); return nil }, "-- a"},
		{"remove exact", "console=tty0 console=ttyS0 console", func(c *Cmdline) error { c.RemoveExact("console=ttyS0"); return nil }, "console=tty0 console"},
		{"remove exact flag", "quiet quiet=1", func(c *Cmdline) error { c.RemoveExact("quiet"); return nil }, "quiet=1"},
		{"remove exact quoted", `x="a b" y`, func(c *Cmdline) error { c.RemoveExact(`"x=a b"`); return nil }, "y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ParseCmdline(tt.in)
			if err := tt.edit(&c); err != nil {
				t.Fatal(err)
			}
			if got := c.String(); got != tt.want {
				t.Fatalf("after one edit: %q, want %q", got, tt.want)
			}
			// Idempotent: a second application changes nothing.
			if err := tt.edit(&c); err != nil {
				t.Fatal(err)
			}
			if got := c.String(); got != tt.want {
				t.Fatalf("after two edits: %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCmdlineEditCounts(t *testing.T) {
	c := ParseCmdline("a a=1 b a=2")
	if n := c.Remove("a"); n != 3 {
		t.Errorf("Remove returned %d, want 3", n)
	}
	if n := c.Remove("a"); n != 0 {
		t.Errorf("second Remove returned %d, want 0", n)
	}
	c = ParseCmdline("x=1 x=1 x=2")
	if n := c.RemoveExact("x=1"); n != 2 {
		t.Errorf("RemoveExact returned %d, want 2", n)
	}
}

func TestCmdlineEditErrors(t *testing.T) {
	var c Cmdline
	for _, arg := range []string{"", "   ", "--", "a -- b", `a"b c`} {
		if err := c.Add(arg); err == nil {
			t.Errorf("Add(%q) succeeded", arg)
		}
	}
	for _, key := range []string{"", "--", "a=b", "a b", `a"b`, "a\xa0b", "a\x00"} {
		if err := c.Replace(key, "v"); err == nil {
			t.Errorf("Replace(%q, v) succeeded", key)
		}
	}
	// No spelling of this value both keeps the quote and closes the
	// quoting, so it would swallow the arguments after it.
	if err := c.Replace("k", `a "`); err == nil {
		t.Errorf("Replace with an unwritable value succeeded")
	}
	if len(c) != 0 {
		t.Errorf("failed edits changed the line: %q", c.String())
	}
}

// An argument with an open quote can only stand last; adding after it
// would change what it means, so edits refuse.
func TestCmdlineEditAfterOpenQuote(t *testing.T) {
	const line = `ro a"b c`
	c := ParseCmdline(line)
	if want := (Cmdline{flag("ro"), flag(`a"b c`)}); !slices.Equal(c, want) {
		t.Fatalf("parsed %#v", c)
	}
	if err := c.Add("quiet"); err == nil {
		t.Errorf("Add after an open quote succeeded: %q", c.String())
	}
	if err := c.Replace("k", "v"); err == nil {
		t.Errorf("Replace after an open quote succeeded: %q", c.String())
	}
	if got := c.String(); got != line {
		t.Errorf("line changed to %q", got)
	}
	// Adding one already there, or anything before "--", is fine.
	if err := c.Add("ro"); err != nil {
		t.Errorf("Add of a present argument: %v", err)
	}
	c = ParseCmdline(`ro k="a ""`)
	if err := c.Replace("k", "v"); err != nil || c.String() != "ro k=v" {
		t.Errorf("Replace of the open argument: %v, %q", err, c.String())
	}
}
