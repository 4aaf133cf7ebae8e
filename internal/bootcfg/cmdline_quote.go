package bootcfg

// format returns text for p that ParseCmdline reads back as exactly p, and
// whether such text exists. The kernel has no escape character, so some
// arguments can only be written in certain ways, and a few (an unmatched
// quote followed by more arguments) cannot be written except as the last
// argument, where nothing follows for the open quote to swallow. Rather
// than reason out every quoting rule, each candidate spelling is checked
// with the parser itself.
func (p Param) format(last bool) (string, bool) {
	for _, text := range p.spellings() {
		if p.parsesFrom(text, last) {
			return text, true
		}
	}
	// Not representable; give the plainest spelling so the output at
	// least shows what the argument was.
	return p.spellings()[0], false
}

// spellings lists the ways of writing p, plainest first. The kernel drops
// a quote that opens the argument, one that opens the value, and one at
// the end if either was dropped; every combination is a candidate, and an
// opening quote without a closing one is useful when the text itself ends
// in a quote that closes it.
func (p Param) spellings() []string {
	k, v := p.Key, p.Value
	if !p.HasValue {
		return []string{k, `"` + k + `"`, `"` + k}
	}
	return []string{
		k + "=" + v,
		k + `="` + v + `"`,
		`"` + k + "=" + v + `"`,
		`"` + k + `="` + v + `"`,
		k + `="` + v,
		`"` + k + "=" + v,
		`"` + k + `="` + v,
	}
}

// parsesFrom reports whether text parses as the single argument p. Unless
// p is the last argument, a following argument must survive too, which
// rules out text that leaves a quote open.
func (p Param) parsesFrom(text string, last bool) bool {
	const probe = "x"
	if !last {
		text += " " + probe
	}
	toks := tokenize(cutNUL(text))
	want := 1
	if !last {
		want = 2
	}
	if len(toks) != want || toks[0].param != p {
		return false
	}
	return last || toks[1].param == Param{Key: probe}
}

// representable reports whether p can be written on a command line with
// further arguments after it, which edits need: an added argument must not
// swallow the ones that follow.
func (p Param) representable() bool {
	_, ok := p.format(false)
	return ok
}
