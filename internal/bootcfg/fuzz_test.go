package bootcfg

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Seeds live in testdata/fuzz/<Name>/ as well; these cover the basics
// when that directory is missing.

func FuzzParseCmdline(f *testing.F) {
	for _, s := range []string{
		"", `a="b c" d`, `"e=f g"`, "x= y", "ro -- single", `k="a b c`, `=a=b`, `""`,
		"a\xa0b\x00c", `"k=""x" y`, "composefs=?" + hexA,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := ParseCmdline(s)
		out := c.String()
		if back := ParseCmdline(out); !slices.Equal(back, c) {
			t.Fatalf("%q parsed as %#v; String %q reparsed as %#v", s, c, out, back)
		}
		// The raw split agrees with the parsed one.
		kernel, init := SplitInitArgs(s)
		if k := ParseCmdline(kernel); !slices.Equal(k, c.Kernel()) {
			t.Fatalf("%q: SplitInitArgs kernel %q parses as %#v, Kernel() is %#v", s, kernel, k, c.Kernel())
		}
		initArgs, _ := c.InitArgs()
		if i := ParseCmdline(init); !slices.Equal(i, initArgs) {
			t.Fatalf("%q: SplitInitArgs init %q parses as %#v, InitArgs() is %#v", s, init, i, initArgs)
		}
		// Edits must not break the round trip, and are idempotent.
		if err := c.Add(s); err == nil {
			once := c.String()
			if err := c.Add(s); err != nil || c.String() != once {
				t.Fatalf("Add(%q) twice: %v, %q then %q", s, err, once, c.String())
			}
			if back := ParseCmdline(once); !slices.Equal(back, c) {
				t.Fatalf("after Add(%q): %q reparsed as %#v, want %#v", s, once, back, c)
			}
		}
		if err := c.Replace("k", s); err == nil {
			if back := ParseCmdline(c.String()); !slices.Equal(back, c) {
				t.Fatalf("after Replace(k, %q): %q reparsed as %#v, want %#v", s, c.String(), back, c)
			}
		}
		_, _ = ComposefsRefs(c)
		_, _ = ParseBootOptions(c)
	})
}

func FuzzParseEntry(f *testing.F) {
	f.Add(sampleEntry)
	f.Add("title T\r\nlinux /l\rinitrd /i\n\noptions a=\"b c\"\nx-y\n")
	f.Add("# only a comment")
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEntry(strings.NewReader(s))
		if err != nil {
			return
		}
		m := e.Marshal()
		e2, err := ParseEntry(bytes.NewReader(m))
		if err != nil {
			t.Fatalf("Marshal output %q does not parse: %v", m, err)
		}
		if !reflect.DeepEqual(e, e2) {
			t.Fatalf("round trip of %q:\n%#v\n%#v", s, e, e2)
		}
		if m2 := e2.Marshal(); !bytes.Equal(m, m2) {
			t.Fatalf("Marshal not stable: %q then %q", m, m2)
		}
		_ = e.Cmdline().String()
		// LoaderConf shares the line syntax; it must round-trip its own
		// settings too.
		if lc, err := ParseLoaderConf(strings.NewReader(s)); err == nil {
			lc2, err := ParseLoaderConf(bytes.NewReader(lc.Marshal()))
			if err != nil || lc2.Default != lc.Default || lc2.Timeout != lc.Timeout {
				t.Fatalf("loader.conf round trip of %q: %+v, %v", s, lc2, err)
			}
		}
	})
}

// FuzzCompareVersions checks that the order is a total order: the sign
// flips with the arguments, a string equals itself, and it is transitive.
func FuzzCompareVersions(f *testing.F) {
	f.Add("1.0~rc1", "1.0", "1.0-1")
	f.Add("123^post1", "123.a-1", "")
	f.Add("~~", "~", "_")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		ab, ba := sign(CompareVersions(a, b)), sign(CompareVersions(b, a))
		if ab != -ba {
			t.Fatalf("Compare(%q, %q) = %d but Compare(%q, %q) = %d", a, b, ab, b, a, ba)
		}
		if CompareVersions(a, a) != 0 {
			t.Fatalf("Compare(%q, %q) != 0", a, a)
		}
		bc, ac := sign(CompareVersions(b, c)), sign(CompareVersions(a, c))
		if ab <= 0 && bc <= 0 && ac > 0 {
			t.Fatalf("%q <= %q <= %q but %q > %q", a, b, c, a, c)
		}
	})
}
