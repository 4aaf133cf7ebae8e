package bootcfg

import "strings"

// CompareVersions compares two version strings by the UAPI Version Format
// Specification, the order systemd-boot uses for entries: it returns a
// negative number if a is older than b, 0 if they are equal, positive if a
// is newer. The string is read as segments:
//
//   - characters other than ASCII letters, digits and "~-^." only separate
//     segments;
//   - '~' marks a pre-release and sorts before everything, even the end of
//     the string (1.0~rc1 < 1.0);
//   - otherwise the string that ends first is older (1.0 < 1.0.1, 1.0 < 1.0-1);
//   - a continuation starting with '-' (version-release) is older than
//     any other, then '^' (a patch on a release), then '.' (a point
//     release), then a plain segment: 123-1 < 123^p1 < 123.1 < 123a;
//   - a number is newer than letters; numbers compare by value, ignoring
//     leading zeros; letters compare byte-wise (upper case first), a longer
//     run being newer when one is a prefix of the other.
//
// The empty string is older than everything except a '~' pre-release.
func CompareVersions(a, b string) int {
	i, j := 0, 0
	for {
		for i < len(a) && !isVersionChar(a[i]) {
			i++
		}
		for j < len(b) && !isVersionChar(b[j]) {
			j++
		}

		if at(a, i) == '~' || at(b, j) == '~' {
			if r := cmpBool(at(a, i) != '~', at(b, j) != '~'); r != 0 {
				return r
			}
			i++
			j++
		}

		if i >= len(a) || j >= len(b) {
			return cmpBool(i < len(a), j < len(b))
		}

		// A string continuing with '-' (release), then '^' (patch), then
		// '.' (point release) is older than one continuing otherwise.
		// The checks run in sequence on the same round, as the
		// specification's reference code does.
		for _, sep := range []byte{'-', '^', '.'} {
			if at(a, i) == sep || at(b, j) == sep {
				if r := cmpBool(at(a, i) != sep, at(b, j) != sep); r != 0 {
					return r
				}
				i++
				j++
			}
		}

		if isDigit(at(a, i)) || isDigit(at(b, j)) {
			if r := cmpBool(isDigit(at(a, i)), isDigit(at(b, j))); r != 0 {
				return r
			}
			for i < len(a) && a[i] == '0' {
				i++
			}
			for j < len(b) && b[j] == '0' {
				j++
			}
			ei, ej := i, j
			for ei < len(a) && isDigit(a[ei]) {
				ei++
			}
			for ej < len(b) && isDigit(b[ej]) {
				ej++
			}
			// Without leading zeros, the longer number is larger;
			// equal lengths compare digit by digit.
			if r := cmpInt(ei-i, ej-j); r != 0 {
				return r
			}
			if r := strings.Compare(a[i:ei], b[j:ej]); r != 0 {
				return r
			}
			i, j = ei, ej
		} else {
			ei, ej := i, j
			for ei < len(a) && isLetter(a[ei]) {
				ei++
			}
			for ej < len(b) && isLetter(b[ej]) {
				ej++
			}
			// Byte order first; a run that is a prefix of the other is
			// older (abc < abcd).
			if r := strings.Compare(a[i:ei], b[j:ej]); r != 0 {
				return r
			}
			i, j = ei, ej
		}
	}
}

// at returns s[i], or 0 past the end, so the end of a string can be tested
// like the NUL terminator the specification's C reference code reads.
func at(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return 0
}

func isVersionChar(c byte) bool {
	return isDigit(c) || isLetter(c) || strings.IndexByte("~-^.", c) >= 0
}

func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
