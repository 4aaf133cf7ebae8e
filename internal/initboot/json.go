package initboot

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The little JSON cfs-init needs at boot (writing booted.json, reading the
// stateroot from origin.json) is done by hand: encoding/json's reflection
// runs so much code for the first time that under QEMU's emulated CPU it
// cost over 40 ms of a boot whose own work should stay under 100 ms.

// jsonWriter writes indented JSON, two spaces a level, as
// json.MarshalIndent(v, "", "  ") would.
type jsonWriter struct {
	b     []byte
	first []bool // per open level: nothing written in it yet
}

func (w *jsonWriter) open(c byte) {
	w.b = append(w.b, c)
	w.first = append(w.first, true)
}

func (w *jsonWriter) close(c byte) {
	empty := w.first[len(w.first)-1]
	w.first = w.first[:len(w.first)-1]
	if !empty {
		w.newline()
	}
	w.b = append(w.b, c)
}

func (w *jsonWriter) newline() {
	w.b = append(w.b, '\n')
	for range w.first {
		w.b = append(w.b, ' ', ' ')
	}
}

// elem starts an array element or, with a key, an object member.
func (w *jsonWriter) elem(key string) {
	if !w.first[len(w.first)-1] {
		w.b = append(w.b, ',')
	}
	w.first[len(w.first)-1] = false
	w.newline()
	if key != "" {
		w.b = appendJSONString(w.b, key)
		w.b = append(w.b, ':', ' ')
	}
}

func (w *jsonWriter) str(key, v string) {
	w.elem(key)
	w.b = appendJSONString(w.b, v)
}

func (w *jsonWriter) boolean(key string, v bool) {
	w.elem(key)
	w.b = strconv.AppendBool(w.b, v)
}

func (w *jsonWriter) num(key string, v float64) {
	w.elem(key)
	w.b = strconv.AppendFloat(w.b, v, 'f', -1, 64)
}

// appendJSONString quotes s for JSON: quotes, backslashes and control
// characters escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

// marshal returns the record as indented JSON with the field names of
// BootRecord's tags.
func (r *BootRecord) marshal() []byte {
	w := &jsonWriter{}
	w.open('{')
	w.str("mode", r.Mode)
	w.str("digest", r.Digest)
	w.str("arg", r.Arg)
	w.boolean("insecure", r.Insecure)
	w.boolean("kernel_verity", r.KernelVerity)
	w.str("image", r.Image)
	w.str("sysroot", r.Sysroot)
	w.str("deployment", r.Deployment)
	w.str("stateroot", r.StateRoot)
	w.str("etc", r.Etc)
	w.str("var", r.Var)
	w.str("device", r.Device)
	w.str("fstype", r.FSType)
	w.boolean("read_only", r.ReadOnly)
	if r.Init != "" {
		w.str("init", r.Init)
	}
	w.elem("timings")
	w.open('{')
	w.num("init_start_ms", r.Timings.InitStart)
	w.num("total_since_kernel_ms", r.Timings.SinceKernel)
	w.num("total_since_init_ms", r.Timings.SinceInit)
	w.num("own_ms", r.Timings.Own)
	w.elem("steps")
	if r.Timings.Steps == nil {
		w.b = append(w.b, "null"...)
	} else {
		w.open('[')
		for _, s := range r.Timings.Steps {
			w.elem("")
			w.open('{')
			w.str("name", s.Name)
			w.num("ms", s.MS)
			w.close('}')
		}
		w.close(']')
	}
	w.close('}')
	w.close('}')
	return append(w.b, '\n')
}

// jsonScanner reads JSON text just well enough to pick one string member
// out of an object, rejecting anything that is not valid JSON.
type jsonScanner struct {
	b []byte
	i int
}

const maxJSONDepth = 64

var errJSONEnd = errors.New("unexpected end of JSON")

func (s *jsonScanner) fail(what string) error {
	if s.i >= len(s.b) {
		return errJSONEnd
	}
	return fmt.Errorf("invalid JSON at byte %d: %s", s.i, what)
}

func (s *jsonScanner) space() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

func (s *jsonScanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// str reads a string, the scanner standing on its opening quote.
func (s *jsonScanner) str() (string, error) {
	if s.peek() != '"' {
		return "", s.fail("want a string")
	}
	s.i++
	var out []byte
	for {
		if s.i >= len(s.b) {
			return "", errJSONEnd
		}
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return string(out), nil
		case c < 0x20:
			return "", s.fail("control character in string")
		case c != '\\':
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				out = append(out, "\uFFFD"...)
			} else {
				out = append(out, s.b[s.i:s.i+n]...)
			}
			s.i += n
			continue
		}
		if s.i+1 >= len(s.b) {
			return "", errJSONEnd
		}
		esc := s.b[s.i+1]
		s.i += 2
		switch esc {
		case '"', '\\', '/':
			out = append(out, esc)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return "", s.fail("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					save := s.i
					s.i += 2
					if lo, ok := s.hex4(); ok && utf16.DecodeRune(r, lo) != utf8.RuneError {
						r2 = utf16.DecodeRune(r, lo)
					} else {
						s.i = save
					}
				}
				r = r2
			}
			out = utf8.AppendRune(out, r)
		default:
			s.i -= 2
			return "", s.fail("bad escape")
		}
	}
}

func (s *jsonScanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(s.b[s.i:s.i+4]), 16, 16)
	if err != nil {
		return 0, false
	}
	s.i += 4
	return rune(n), true
}

// skip passes over one value of any kind.
func (s *jsonScanner) skip(depth int) error {
	if depth > maxJSONDepth {
		return s.fail("nested too deeply")
	}
	switch c := s.peek(); {
	case c == '"':
		_, err := s.str()
		return err
	case c == '{' || c == '[':
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		s.i++
		s.space()
		if s.peek() == end {
			s.i++
			return nil
		}
		for {
			if c == '{' {
				if _, err := s.str(); err != nil {
					return err
				}
				s.space()
				if s.peek() != ':' {
					return s.fail("want ':'")
				}
				s.i++
				s.space()
			}
			if err := s.skip(depth + 1); err != nil {
				return err
			}
			s.space()
			switch s.peek() {
			case ',':
				s.i++
				s.space()
			case end:
				s.i++
				return nil
			default:
				return s.fail("want ',' or the end of the " + map[byte]string{'{': "object", '[': "array"}[c])
			}
		}
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range []string{"true", "false", "null"} {
			if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
				s.i += len(lit)
				return nil
			}
		}
		return s.fail("bad literal")
	default:
		return s.number()
	}
}

// number checks the JSON number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *jsonScanner) number() error {
	start := s.i
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.peek() == '-' {
		s.i++
	}
	if s.peek() == '0' {
		s.i++
	} else if digits() == 0 {
		s.i = start
		return s.fail("want a value")
	}
	if s.peek() == '.' {
		s.i++
		if digits() == 0 {
			return s.fail("bad number")
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if digits() == 0 {
			return s.fail("bad number")
		}
	}
	return nil
}

// jsonObjectString returns the string member key of the JSON object in
// data (the last one, if repeated). found is false when the object has no
// such member; a member of another type, or text that is not one valid
// JSON object, is an error.
func jsonObjectString(data []byte, key string) (val string, found bool, err error) {
	s := &jsonScanner{b: data}
	s.space()
	if s.peek() != '{' {
		return "", false, s.fail("want an object")
	}
	s.i++
	s.space()
	if s.peek() == '}' {
		s.i++
	} else {
		for {
			k, err := s.str()
			if err != nil {
				return "", false, err
			}
			s.space()
			if s.peek() != ':' {
				return "", false, s.fail("want ':'")
			}
			s.i++
			s.space()
			if k == key {
				if s.peek() != '"' {
					return "", false, s.fail(fmt.Sprintf("%q must be a string", key))
				}
				if val, err = s.str(); err != nil {
					return "", false, err
				}
				found = true
			} else if err := s.skip(1); err != nil {
				return "", false, err
			}
			s.space()
			if s.peek() == ',' {
				s.i++
				s.space()
				continue
			}
			if s.peek() != '}' {
				return "", false, s.fail("want ',' or the end of the object")
			}
			s.i++
			break
		}
	}
	s.space()
	if s.i != len(s.b) {
		return "", false, s.fail("text after the object")
	}
	return val, found, nil
}
