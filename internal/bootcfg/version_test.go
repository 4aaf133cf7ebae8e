package bootcfg

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"6.12.10", "6.12.9", 1},
		{"6.12.9", "6.12.10", -1},
		{"6.12.10+deb12-amd64", "6.12.9+deb12-amd64", 1},
		{"1.0", "1.0", 0},
		{"1.0~rc1", "1.0", -1},
		{"1.0~rc1", "1.0~rc2", -1},
		// Unlike Debian's order: once both have skipped a '~', the string
		// that goes on is newer, even if it goes on with another '~'.
		{"1.0~~", "1.0~", 1},
		{"1.0~", "1.0", -1},
		{"1.0", "1.0.1", -1},
		{"1.0", "1.0-1", -1},
		{"1.0-1", "1.0.1", -1},
		{"1.0^p1", "1.0", 1},
		{"1.0^p1", "1.0.1", -1},
		{"1.0-1", "1.0^p1", -1},
		// Leading zeros do not count.
		{"1.007", "1.7", 0},
		{"0", "00", 0},
		{"1.010", "1.9", 1},
		// Numbers are newer than letters.
		{"1.1", "1.a", 1},
		{"2", "a", 1},
		// Letters compare byte-wise, so upper case is older; a longer run is newer.
		{"B", "a", -1},
		{"abc", "abd", -1},
		{"abc", "abcd", -1},
		// Other characters only separate segments.
		{"123_a", "123a", 0},
		{"1_2", "1+2", 0},
		{"1_2", "12", -1},
		// '.' is older than a plain continuation.
		{"123.a", "123a", -1},
		// Empty strings: older than anything but a pre-release.
		{"", "", 0},
		{"", "0", -1},
		{"", "~", 1},
		{"_", "", 0},
		// Numbers of any length.
		{"99999999999999999999999", "99999999999999999999998", 1},
	}
	for _, tt := range tests {
		if got := sign(CompareVersions(tt.a, tt.b)); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := sign(CompareVersions(tt.b, tt.a)); got != -tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

// The ordering example given with the UAPI version format's reference
// implementation, oldest first.
func TestCompareVersionsOrder(t *testing.T) {
	want := []string{
		"122.1",
		"123~rc1-1",
		"123",
		"123-a",
		"123-a.1",
		"123-1",
		"123-1.1",
		"123^post1",
		"123.a-1",
		"123.1-1",
		"123a-1",
		"124-1",
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		got := slices.Clone(want)
		r.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
		slices.SortFunc(got, CompareVersions)
		if !slices.Equal(got, want) {
			t.Fatalf("sorted %q, want %q", got, want)
		}
	}
	for i := range want {
		for j := range want {
			if got, exp := sign(CompareVersions(want[i], want[j])), cmpInt(i, j); got != exp {
				t.Errorf("CompareVersions(%q, %q) = %d, want %d", want[i], want[j], got, exp)
			}
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
