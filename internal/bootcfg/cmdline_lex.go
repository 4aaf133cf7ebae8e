package bootcfg

// token is one argument found by tokenize: the parsed param and where it
// sits in the input (start of the argument, start of the next one).
type token struct {
	param       Param
	start, next int
}

// isKernelSpace mirrors the kernel's isspace() (lib/ctype.c), which treats
// the Latin-1 no-break space 0xA0 as whitespace too. Splitting on it keeps
// our view of a command line identical to the kernel's, even though it
// means a UTF-8 character containing that byte splits an argument.
func isKernelSpace(b byte) bool {
	switch b {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0xa0:
		return true
	}
	return false
}

func isKernelSpaceRune(r rune) bool {
	return r < 0x80 && isKernelSpace(byte(r))
}

// tokenize splits s into arguments; s must not contain NUL.
func tokenize(s string) []token {
	var toks []token
	pos := skipSpaces(s, 0)
	for pos < len(s) {
		p, n := nextArg(s[pos:])
		next := skipSpaces(s, pos+n)
		toks = append(toks, token{param: p, start: pos, next: next})
		pos = next
	}
	return toks
}

func skipSpaces(s string, i int) int {
	for i < len(s) && isKernelSpace(s[i]) {
		i++
	}
	return i
}

// nextArg parses the argument at the start of s (which is non-empty and
// does not start with whitespace) and returns it with the number of bytes
// consumed, including the one separator byte after it. It follows the
// kernel's next_arg() step by step; where the kernel writes NUL bytes into
// its buffer to cut strings, this computes the same cut points.
func nextArg(s string) (Param, int) {
	consumed := 0
	quoted := false
	inQuote := false
	if s[0] == '"' {
		s = s[1:]
		consumed = 1
		quoted, inQuote = true, true
	}

	i := 0
	equals := 0 // 0 means no '=': a '=' at offset 0 is never a split point
	for ; i < len(s); i++ {
		c := s[i]
		if isKernelSpace(c) && !inQuote {
			break
		}
		if equals == 0 && c == '=' {
			equals = i
		}
		if c == '"' {
			inQuote = !inQuote
		}
	}
	consumed += i
	if i < len(s) {
		consumed++ // the separator
	}

	// cut is where the kernel would put a NUL just before the end: a
	// closing quote at s[i-1] when the value or the whole argument was
	// opened by a quote.
	cut := i
	var p Param
	if equals == 0 {
		if quoted && i > 0 && s[i-1] == '"' {
			cut = i - 1
		}
		p.Key = s[:cut]
		return p, consumed
	}
	p.Key = s[:equals]
	p.HasValue = true
	valStart := equals + 1
	if valStart < i && s[valStart] == '"' {
		valStart++
		if s[i-1] == '"' {
			cut = i - 1
		}
	}
	if quoted && s[i-1] == '"' {
		cut = i - 1
	}
	if cut < valStart {
		// The closing quote was the opening one (`key="`): the value
		// starts after it and is empty.
		cut = valStart
	}
	p.Value = s[valStart:cut]
	return p, consumed
}
