package erofs

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParseDump checks that the parser never panics and only returns
// *DumpError, and that whatever it accepts prints to a dump that parses
// (strictly) to the same tree and prints to the same text again.
// Seeds: testdata/fuzz/FuzzParseDump.
func FuzzParseDump(f *testing.F) {
	f.Add([]byte(dumpRootLine))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, strict := range []bool{false, true} {
			root, err := ParseDump(bytes.NewReader(data), DumpOptions{Strict: strict})
			if err != nil {
				var de *DumpError
				if !errors.As(err, &de) {
					t.Fatalf("strict=%v: error %v (%T) is not a *DumpError", strict, err, err)
				}
				if de.Line < 0 || de.Err == nil || err.Error() == "" {
					t.Fatalf("strict=%v: malformed error %#v", strict, de)
				}
				continue
			}
			checkDumpTree(t, root)
			var out bytes.Buffer
			if err := WriteDump(&out, root, DumpPrintOptions{}); err != nil {
				t.Fatal(err)
			}
			text := out.String()
			again, err := ParseDump(bytes.NewReader(out.Bytes()), DumpOptions{Strict: true})
			if err != nil {
				t.Fatalf("strict=%v: printed dump does not parse: %v\n%q", strict, err, text)
			}
			if diff := diffDumpTrees(root, again); diff != "" {
				t.Fatalf("strict=%v: tree changed by print+parse:\n%s", strict, diff)
			}
			out.Reset()
			if err := WriteDump(&out, again, DumpPrintOptions{}); err != nil {
				t.Fatal(err)
			}
			if out.String() != text {
				t.Fatalf("strict=%v: printing not idempotent:\n%q\n%q", strict, text, out.String())
			}
		}
	})
}
