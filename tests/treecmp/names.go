package treecmp

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
)

// ReadNames lists a directory, sorted, with names as raw bytes.
func ReadNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("readdir %s: %w", dir, err)
	}
	slices.Sort(names)
	return names, nil
}

// OnlyIn returns the names of the sorted list a that the sorted list b
// lacks.
func OnlyIn(a, b []string) []string {
	var out []string
	for _, x := range a {
		if _, found := slices.BinarySearch(b, x); !found {
			out = append(out, x)
		}
	}
	return out
}

// QuoteAll quotes names for a message, the first 20 of them.
func QuoteAll(names []string) []string {
	out := make([]string, 0, min(len(names), 20))
	for i, n := range names {
		if i == 20 {
			out = append(out, fmt.Sprintf("... (%d in all)", len(names)))
			break
		}
		out = append(out, Quote(n))
	}
	return out
}

// Quote shows a raw name readably: as it is when it is printable UTF-8,
// else Go-quoted.
func Quote(s string) string {
	if bytes.ContainsFunc([]byte(s), func(r rune) bool { return r < ' ' || r == 0x7f }) || strings.ToValidUTF8(s, "\uFFFD") != s {
		return fmt.Sprintf("%q", s)
	}
	return s
}
