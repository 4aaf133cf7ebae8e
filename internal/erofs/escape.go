package erofs

import (
	"errors"
	"fmt"
)

// Escaping of the composefs dump format (composefs-dump(5)).
//
// On input a field may use \\, \n, \r, \t and \xHH (two hex digits of
// either case); every other byte stands for itself. On output
// composefs-info writes \\, \n, \r, \t and a lowercase \xHH for every other
// byte that is not a graphic character in the C locale, so a dump line never
// holds a space, a control byte or a byte >= 0x80.

// escapeFlags select the variants of the output escaping.
type escapeFlags uint8

const (
	// escKeepSpace keeps printable spaces (composefs-info ls).
	escKeepSpace escapeFlags = 1 << iota
	// escEqual hex-escapes '=' (xattr keys and values).
	escEqual
	// escLoneDash writes a field that is exactly "-" as \x2d, so that it
	// is not read back as "unset".
	escLoneDash
)

const lowerHex = "0123456789abcdef"

// dumpNeedsEscape reports whether c must be escaped under flags.
func dumpNeedsEscape(c byte, flags escapeFlags) bool {
	switch {
	case c == '\\':
		return true
	case c == '=':
		return flags&escEqual != 0
	case c == ' ':
		return flags&escKeepSpace == 0
	}
	return c < 0x20 || c > 0x7e // not isprint/isgraph in the C locale
}

// appendEscaped appends s escaped under flags to dst.
func appendEscaped[T string | []byte](dst []byte, s T, flags escapeFlags) []byte {
	if flags&escLoneDash != 0 && len(s) == 1 && s[0] == '-' {
		return append(dst, `\x2d`...)
	}
	i := 0
	for i < len(s) && !dumpNeedsEscape(s[i], flags) {
		i++
	}
	dst = append(dst, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if !dumpNeedsEscape(c, flags) {
			dst = append(dst, c)
			continue
		}
		switch c {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'x', lowerHex[c>>4], lowerHex[c&15])
		}
	}
	return dst
}

// EscapeField escapes s as composefs-info dump writes a path or a symlink
// target: every byte that is not a graphic ASCII character is escaped, so
// the result holds no space and no newline.
func EscapeField(s string) string {
	return string(appendEscaped(nil, s, 0))
}

// EscapeForLs escapes s as composefs-info ls does: like EscapeField but
// spaces are kept.
func EscapeForLs(s string) string {
	return string(appendEscaped(nil, s, escKeepSpace))
}

// Errors of UnescapeField and of the dump parser's field decoding.
var (
	ErrEscapeTruncated = errors.New(`backslash at end of dumpFieldText`)
	ErrEscapeHex       = errors.New(`\x must be followed by two hex digits`)
	ErrEscapeUnknown   = errors.New(`unsupported escape`)
)

func unhexDigit(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// appendUnescaped decodes the dump escapes of src and appends the bytes to
// dst.
func appendUnescaped(dst, src []byte) ([]byte, error) {
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		if i >= len(src) {
			return dst, ErrEscapeTruncated
		}
		switch c = src[i]; c {
		case '\\':
			dst = append(dst, '\\')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'x':
			if i+2 >= len(src) {
				return dst, ErrEscapeHex
			}
			hi, lo := unhexDigit(src[i+1]), unhexDigit(src[i+2])
			if hi < 0 || lo < 0 {
				return dst, ErrEscapeHex
			}
			dst = append(dst, byte(hi<<4|lo))
			i += 2
		default:
			if c > ' ' && c < 0x7f {
				return dst, fmt.Errorf("%w \\%c", ErrEscapeUnknown, c)
			}
			return dst, fmt.Errorf("%w: backslash followed by byte 0x%02x", ErrEscapeUnknown, c)
		}
	}
	return dst, nil
}
