package erofs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// The composefs dump format (composefs-dump(5)) is the text form of a tree
// that upstream mkcomposefs reads with --from-file and composefs-info dump
// writes. One line per file:
//
//	PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST [XATTR]...
//
// Fields are separated by exactly one space and escaped as escape.go
// describes. ParseDump applies upstream's grammar and validation, and
// refuses a few inputs upstream accepts with undefined or lossy results
// (see ParseDump).

// DumpOptions control ParseDump.
type DumpOptions struct {
	// Strict applies upstream's CFS_PARSE_STRICT rules: the last line must
	// end in a newline, a symlink's SIZE must equal the length of its
	// target, a symlink must not have CONTENT, and RDEV must be 0 on
	// everything but block and character devices.
	Strict bool
}

// DumpError is the error ParseDump returns for a malformed dump.
type DumpError struct {
	Line int    // 1-based line number; 0 if the problem is not on one line
	Path string // path of the entry concerned (unescaped), "" if unknown
	Err  error
}

func (e *DumpError) Error() string {
	var b []byte
	if e.Line > 0 {
		b = fmt.Appendf(b, "line %d: ", e.Line)
	} else {
		b = append(b, "dump: "...)
	}
	if e.Path != "" {
		b = appendEscaped(b, e.Path, 0)
		b = append(b, ": "...)
	}
	b = append(b, e.Err.Error()...)
	return string(b)
}

func (e *DumpError) Unwrap() error { return e.Err }

// Limits of the dump parser beyond the tree's own.
const (
	// MaxDumpLine bounds the memory a single line may take.
	MaxDumpLine = 16 << 20
	// MaxDumpPath bounds the length of a path (unescaped).
	MaxDumpPath = 1 << 20
	// MaxDumpXattrText bounds the escaped text of a line's xattrs.
	// Upstream refuses more than 65535 bytes there ("Too many xattrs") to
	// avoid quadratic work; we allow twice that because composefs-info
	// writes a node's xattrs, which may hold up to 32767 bytes of binary
	// data, in up to 4x as many characters, and every dump we print must
	// parse back. Duplicate keys cost linear time here.
	MaxDumpXattrText = 1 << 17

	// maxExternalSize is the largest external file upstream accepts: its
	// chunk index must fit in maxExternalChunks chunks of 2^maxChunkBits.
	maxExternalSize = uint64(maxExternalChunks) << maxChunkBits

	dumpFields = 11
)

const (
	fPath = iota
	fSize
	fMode
	fNlink
	fUID
	fGID
	fRdev
	fMtime
	fPayload
	fContent
	fDigest
)

// ParseDump reads a dump and returns the root of its tree.
//
// The tree follows upstream mkcomposefs: the root "/" comes first, a
// directory comes before its children (which may come in any order), and
// a hard link line ('@' before MODE) only uses PATH, MODE and PAYLOAD (the
// absolute path of the target). Links are resolved once the whole file is
// read; chains are followed, so LinkTo is always the final target. A link
// entry has its Name, the Mode of its line and LinkTo, nothing else.
//
// Per file type: a symlink's Size is the length of its target (Payload);
// CONTENT, PAYLOAD and DIGEST are kept only on regular files (a CONTENT of
// length 0 is no content); Rdev only on character and block devices.
//
// Where upstream is lax ParseDump refuses: numbers must be plain decimal
// (octal for MODE) and fit their field (only MTIME seconds may be negative,
// as strtoull's wraparound allows upstream); DIGEST must be 64 hex digits
// (an empty DIGEST field counts as unset); a path must be absolute without
// empty components; paths, targets and xattr keys must not hold NUL bytes
// (upstream would truncate them); a hard link may not point at a directory
// or form a cycle; a regular file too big for upstream's writer is refused
// here. Every error is a *DumpError.
func ParseDump(r io.Reader, opts DumpOptions) (*Node, error) {
	p := &dumpParser{strict: opts.Strict, intern: make(map[string]string)}
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long[:0], line...)
			for err == bufio.ErrBufferFull {
				if len(long) > MaxDumpLine {
					return nil, &DumpError{Line: p.lineNo + 1,
						Err: fmt.Errorf("line longer than %d bytes", MaxDumpLine)}
				}
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil && err != io.EOF {
			return nil, &DumpError{Line: p.lineNo + 1, Err: err}
		}
		if len(line) > 0 {
			p.lineNo++
			if line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			} else if p.strict {
				return nil, &DumpError{Line: p.lineNo, Err: errors.New("missing newline at end of file")}
			}
			if len(line) > MaxDumpLine {
				return nil, &DumpError{Line: p.lineNo,
					Err: fmt.Errorf("line longer than %d bytes", MaxDumpLine)}
			}
			if err := p.parseLine(line); err != nil {
				return nil, err
			}
		}
		if err == io.EOF {
			break
		}
	}
	if p.root == nil {
		return nil, &DumpError{Err: errors.New("no files in dump")}
	}
	if err := p.resolveLinks(); err != nil {
		return nil, err
	}
	return p.root, nil
}

type dumpParser struct {
	strict bool
	lineNo int
	root   *Node
	// dirs caches the chain of directories from the root to the parent
	// of the previous line: dump files list a directory's entries
	// together, so most lookups are free.
	dirs  []*Node
	links []dumpLink

	cur     []byte // unescaped path of the current line, for errors
	pathBuf []byte // scratch for unescaping paths
	buf     []byte // scratch for unescaping other fields

	slab   []Node
	intern map[string]string

	// The xattrs of the current line, with replaced ones marked dead,
	// and an index by key once there are many.
	xattrs []Xattr
	xdead  []bool
	xindex map[string]int
}

type dumpLink struct {
	node   *Node
	target string
	line   int
}

// fail returns a *DumpError for the current line and path.
func (p *dumpParser) fail(format string, args ...any) error {
	return &DumpError{Line: p.lineNo, Path: string(p.cur), Err: fmt.Errorf(format, args...)}
}

// dumpFieldText returns a field for an error message, shortened.
func dumpFieldText(b []byte) string {
	const max = 40
	if len(b) > max {
		return string(appendEscaped(nil, b[:max], 0)) + "..."
	}
	return string(appendEscaped(nil, b, 0))
}

// cutDumpField splits b at the first space, like upstream's split_at: without a
// space the whole rest is the field.
func cutDumpField(b []byte) (field, rest []byte) {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// dumpUnescape decodes src, returning src itself when it holds no escapes or
// else a slice of *scratch.
func dumpUnescape(scratch *[]byte, src []byte) ([]byte, error) {
	if bytes.IndexByte(src, '\\') < 0 {
		return src, nil
	}
	b, err := appendUnescaped((*scratch)[:0], src)
	*scratch = b
	return b, err
}

// parseDumpUint parses a plain unsigned number in base 8 or 10 no larger than
// max.
func parseDumpUint(b []byte, base, limit uint64) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		d := uint64(c) - '0'
		if d >= base || v > (limit-d)/base {
			return 0, false
		}
		v = v*base + d
	}
	return v, true
}

func (p *dumpParser) newNode() *Node {
	if len(p.slab) == 0 {
		p.slab = make([]Node, 256)
	}
	n := &p.slab[0]
	p.slab = p.slab[1:]
	return n
}

// internString returns b as a string, shared with earlier equal strings;
// xattr keys and many values repeat on every line.
func (p *dumpParser) internString(b []byte) string {
	if s, ok := p.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(b) <= 128 && len(p.intern) < 1<<16 {
		p.intern[s] = s
	}
	return s
}

func (p *dumpParser) parseLine(line []byte) error {
	p.cur = nil
	if i := bytes.IndexByte(line, 0); i >= 0 {
		return p.fail("NUL byte at column %d", i+1)
	}
	var f [dumpFields][]byte
	rest := line
	for i := range f {
		f[i], rest = cutDumpField(rest)
	}

	path, err := dumpUnescape(&p.pathBuf, f[fPath])
	if err != nil {
		return p.fail("PATH: %w", err)
	}
	if len(path) <= MaxDumpPath {
		p.cur = path
	}
	switch {
	case len(path) == 0:
		return p.fail("empty PATH")
	case len(path) > MaxDumpPath:
		return p.fail("PATH longer than %d bytes", MaxDumpPath)
	case bytes.IndexByte(path, 0) >= 0:
		return p.fail("PATH contains a NUL byte")
	}

	modeField := f[fMode]
	hardlink := len(modeField) > 0 && modeField[0] == '@'
	if hardlink {
		modeField = modeField[1:]
	}
	m, ok := parseDumpUint(modeField, 8, math.MaxUint32)
	if !ok {
		return p.fail("invalid MODE %q", dumpFieldText(f[fMode]))
	}
	mode := uint32(m)
	if fileTypeOf(mode) == FileTypeUnknown {
		return p.fail("MODE %o has no valid file type", mode)
	}

	node, err := p.addNode(path, mode)
	if err != nil {
		return err
	}
	node.Mode = mode

	if hardlink {
		if mode&ModeTypeMask == ModeDir {
			return p.fail("directories cannot be hardlinked")
		}
		t := f[fPayload]
		if len(t) == 1 && t[0] == '-' {
			return p.fail("hardlink without a target (PAYLOAD is -)")
		}
		target, err := dumpUnescape(&p.buf, t)
		if err != nil {
			return p.fail("PAYLOAD: %w", err)
		}
		if bytes.IndexByte(target, 0) >= 0 {
			return p.fail("hardlink target contains a NUL byte")
		}
		p.links = append(p.links, dumpLink{node: node, target: string(target), line: p.lineNo})
		return nil
	}
	return p.parseFields(node, &f, rest)
}

// addNode validates path and adds a new node there.
func (p *dumpParser) addNode(path []byte, mode uint32) (*Node, error) {
	if len(path) == 1 && path[0] == '/' {
		if mode&ModeTypeMask != ModeDir {
			return nil, p.fail("root must be a directory")
		}
		if p.root != nil {
			return nil, p.fail("root directory listed twice")
		}
		n := p.newNode()
		p.root = n
		p.dirs = append(p.dirs[:0], n)
		return n, nil
	}
	if p.root == nil {
		return nil, p.fail(`the root directory "/" must be the first line`)
	}
	if path[0] != '/' {
		return nil, p.fail("path is not absolute")
	}
	parent, name, err := p.lookupParent(path)
	if err != nil {
		return nil, err
	}
	n := p.newNode()
	n.Name = string(name)
	if err := parent.AddChild(n); err != nil {
		if errors.Is(err, ErrDuplicate) {
			return nil, p.fail("%w: path listed twice", err)
		}
		return nil, p.fail("%w", err)
	}
	return n, nil
}

func checkDumpName(name []byte) error {
	switch {
	case len(name) == 0:
		return fmt.Errorf("%w (empty path component)", ErrEmptyName)
	case len(name) == 1 && name[0] == '.', len(name) == 2 && name[0] == '.' && name[1] == '.':
		return fmt.Errorf("%w (invalid path component)", ErrDotName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w (%d bytes)", ErrNameTooLong, len(name))
	}
	return nil
}

// lookupParent returns the parent directory of the absolute path and the
// last component.
func (p *dumpParser) lookupParent(path []byte) (*Node, []byte, error) {
	rel := path[1:]
	d := 0 // p.dirs[d] is the directory reached so far
	for {
		i := bytes.IndexByte(rel, '/')
		if i < 0 {
			if err := checkDumpName(rel); err != nil {
				return nil, nil, p.fail("%w", err)
			}
			return p.dirs[d], rel, nil
		}
		comp := rel[:i]
		rel = rel[i+1:]
		if err := checkDumpName(comp); err != nil {
			return nil, nil, p.fail("%w", err)
		}
		if d+1 < len(p.dirs) && p.dirs[d+1].Name == string(comp) {
			d++
			continue
		}
		prefix := path[:len(path)-len(rel)-1]
		c := p.dirs[d].Lookup(string(comp))
		if c == nil {
			return nil, nil, p.fail("parent directory %s does not exist (a directory must come before its entries)",
				appendEscaped(nil, prefix, 0))
		}
		if !c.IsDir() || c.LinkTo != nil {
			return nil, nil, p.fail("parent %s is not a directory", appendEscaped(nil, prefix, 0))
		}
		p.dirs = append(p.dirs[:d+1], c)
		d++
	}
}

// optional decodes PAYLOAD, CONTENT or DIGEST, where "-" means unset.
func (p *dumpParser) optional(name string, b []byte) ([]byte, bool, error) {
	if len(b) == 1 && b[0] == '-' {
		return nil, false, nil
	}
	v, err := dumpUnescape(&p.buf, b)
	if err != nil {
		return nil, false, p.fail("%s: %w", name, err)
	}
	return v, true, nil
}

func (p *dumpParser) parseFields(n *Node, f *[dumpFields][]byte, xattrText []byte) error {
	size, ok := parseDumpUint(f[fSize], 10, math.MaxUint64)
	if !ok {
		return p.fail("invalid SIZE %q", dumpFieldText(f[fSize]))
	}
	nlink, ok := parseDumpUint(f[fNlink], 10, math.MaxUint32)
	if !ok {
		return p.fail("invalid NLINK %q", dumpFieldText(f[fNlink]))
	}
	uid, ok := parseDumpUint(f[fUID], 10, math.MaxUint32)
	if !ok {
		return p.fail("invalid UID %q", dumpFieldText(f[fUID]))
	}
	gid, ok := parseDumpUint(f[fGID], 10, math.MaxUint32)
	if !ok {
		return p.fail("invalid GID %q", dumpFieldText(f[fGID]))
	}
	rdev, ok := parseDumpUint(f[fRdev], 10, math.MaxUint64)
	if !ok {
		return p.fail("invalid RDEV %q", dumpFieldText(f[fRdev]))
	}
	mtime, ok := parseDumpMtime(f[fMtime])
	if !ok {
		return p.fail("invalid MTIME %q (want SECONDS.NANOSECONDS)", dumpFieldText(f[fMtime]))
	}
	n.Nlink = uint32(nlink)
	n.UID = uint32(uid)
	n.GID = uint32(gid)
	n.Mtime = mtime
	typ := n.Mode & ModeTypeMask

	if typ == ModeChr || typ == ModeBlk {
		n.Rdev = rdev
	} else if p.strict && rdev != 0 {
		return p.fail("RDEV %d on a file that is not a device", rdev)
	}

	// PAYLOAD: symlink target or backing file path.
	payload, hasPayload, err := p.optional("PAYLOAD", f[fPayload])
	if err != nil {
		return err
	}
	switch {
	case typ == ModeSymlink && !hasPayload:
		return p.fail("symlink without a target (PAYLOAD is -)")
	case typ == ModeSymlink && len(payload) == 0:
		return p.fail("symlink with an empty target")
	case typ == ModeSymlink && len(payload) > MaxSymlinkLen:
		return p.fail("symlink target longer than %d bytes (%d)", MaxSymlinkLen, len(payload))
	case len(payload) > MaxSymlinkLen:
		return p.fail("PAYLOAD longer than %d bytes (%d)", MaxSymlinkLen, len(payload))
	case bytes.IndexByte(payload, 0) >= 0:
		return p.fail("PAYLOAD contains a NUL byte")
	}
	if typ == ModeSymlink {
		if p.strict && size != uint64(len(payload)) {
			return p.fail("symlink SIZE %d does not match its target length %d", size, len(payload))
		}
		n.Payload = string(payload)
		n.Size = uint64(len(payload))
	} else {
		n.Size = size
		if typ == ModeReg {
			n.Payload = string(payload)
		}
	}

	// CONTENT: inline data.
	content, hasContent, err := p.optional("CONTENT", f[fContent])
	if err != nil {
		return err
	}
	if hasContent {
		if uint64(len(content)) != size {
			return p.fail("CONTENT is %d bytes but SIZE is %d", len(content), size)
		}
		if typ == ModeSymlink {
			if p.strict && len(content) > 0 {
				return p.fail("symlink with CONTENT")
			}
		} else if len(content) > MaxInlineContent {
			return p.fail("inline content of %d bytes exceeds the maximum of %d", len(content), MaxInlineContent)
		}
		if typ == ModeReg && len(content) > 0 {
			n.Content = bytes.Clone(content)
		}
	}
	if typ == ModeReg && n.Content == nil && n.Size > maxExternalSize {
		return p.fail("file too big: size %d exceeds %d (%d chunks)", n.Size, maxExternalSize, maxExternalChunks)
	}

	// DIGEST: fs-verity digest of external content.
	digest, hasDigest, err := p.optional("DIGEST", f[fDigest])
	if err != nil {
		return err
	}
	if hasDigest && len(digest) > 0 {
		if len(digest) != 64 {
			return p.fail("DIGEST must be 64 hex digits, not %d characters", len(digest))
		}
		var d verity.Digest
		if err := d.UnmarshalText(digest); err != nil {
			return p.fail("DIGEST %q is not hexadecimal", dumpFieldText(digest))
		}
		if d.IsZero() {
			// The tree model reads the zero digest as "none".
			return p.fail("DIGEST is all zeros, which is the digest of no content")
		}
		if typ == ModeReg {
			n.Digest = d
		}
	}

	if len(xattrText) > 0 {
		return p.parseXattrs(n, xattrText)
	}
	return nil
}

// parseDumpMtime parses SECONDS.NANOSECONDS. Seconds may be negative: upstream
// reads them with strtoull, which wraps "-N" around, and prints them back
// as a signed number.
func parseDumpMtime(b []byte) (Timespec, bool) {
	i := bytes.IndexByte(b, '.')
	if i < 0 {
		return Timespec{}, false
	}
	sec, nsec := b[:i], b[i+1:]
	neg := len(sec) > 0 && sec[0] == '-'
	if neg {
		sec = sec[1:]
	}
	s, ok := parseDumpUint(sec, 10, math.MaxUint64)
	if !ok {
		return Timespec{}, false
	}
	if neg {
		s = -s
	}
	ns, ok := parseDumpUint(nsec, 10, math.MaxUint32)
	if !ok {
		return Timespec{}, false
	}
	return Timespec{Sec: int64(s), Nsec: uint32(ns)}, true
}

// parseXattrs parses the KEY=VALUE fields after DIGEST. A later value of
// the same key replaces the earlier one and moves it last, and the running
// total must stay within upstream's per-file budget at every step.
func (p *dumpParser) parseXattrs(n *Node, text []byte) error {
	if len(text) > MaxDumpXattrText {
		return p.fail("xattrs take more than %d bytes", MaxDumpXattrText)
	}
	p.xattrs = p.xattrs[:0]
	p.xdead = p.xdead[:0]
	useIndex := false
	live, cost := 0, 0
	for len(text) > 0 {
		var tok []byte
		tok, text = cutDumpField(text)
		eq := bytes.IndexByte(tok, '=')
		if eq < 0 {
			if len(tok) == 0 {
				return p.fail("empty xattr dumpFieldText (two spaces in a row?)")
			}
			return p.fail("xattr %q has no '='", dumpFieldText(tok))
		}
		kb, err := dumpUnescape(&p.buf, tok[:eq])
		if err != nil {
			return p.fail("xattr key: %w", err)
		}
		switch {
		case len(kb) == 0:
			return p.fail("empty xattr key")
		case len(kb) > MaxXattrNameLen:
			return p.fail("xattr key longer than %d bytes (%d)", MaxXattrNameLen, len(kb))
		case bytes.IndexByte(kb, 0) >= 0:
			return p.fail("xattr key contains a NUL byte")
		}
		key := p.internString(kb)
		vb, err := dumpUnescape(&p.buf, tok[eq+1:])
		if err != nil {
			return p.fail("xattr %s: value: %w", appendEscaped(nil, key, escEqual), err)
		}
		if len(vb) > MaxXattrValueLen {
			return p.fail("xattr %s: value longer than %d bytes (%d)",
				appendEscaped(nil, key, escEqual), MaxXattrValueLen, len(vb))
		}

		// Drop an earlier value of the same key.
		old := -1
		if useIndex {
			if i, ok := p.xindex[key]; ok {
				old = i
			}
		} else {
			for i := range p.xattrs {
				if !p.xdead[i] && p.xattrs[i].Key == key {
					old = i
					break
				}
			}
		}
		if old >= 0 {
			p.xdead[old] = true
			cost -= 2*xattrEntryHeaderSize - 1 + len(key) + len(p.xattrs[old].Value)
			if live--; live == 0 {
				cost = 0
			}
		}
		entry := 2*xattrEntryHeaderSize - 1 + len(key) + len(vb)
		if live == 0 {
			entry += xattrIbodyHeaderSize
		}
		if cost+entry > maxXattrBudget {
			return p.fail("xattrs too large: %d bytes of xattr metadata with %s, limit %d",
				cost+entry, appendEscaped(nil, key, escEqual), maxXattrBudget)
		}
		cost += entry
		live++
		var value string
		if len(vb) <= 64 {
			value = p.internString(vb)
		} else {
			value = string(vb)
		}
		p.xattrs = append(p.xattrs, Xattr{Key: key, Value: value})
		p.xdead = append(p.xdead, false)
		if useIndex {
			p.xindex[key] = len(p.xattrs) - 1
		} else if len(p.xattrs) > 16 {
			p.xindex = make(map[string]int)
			for i, x := range p.xattrs {
				if !p.xdead[i] {
					p.xindex[x.Key] = i
				}
			}
			useIndex = true
		}
	}
	if live == 0 {
		return nil
	}
	n.Xattrs = make([]Xattr, 0, live)
	for i, x := range p.xattrs {
		if !p.xdead[i] {
			n.Xattrs = append(n.Xattrs, x)
		}
	}
	return nil
}

// lookupDumpLinkTarget resolves a hard link's target path the way upstream
// does: leading and repeated slashes are skipped, "." and ".." are names
// like any other (and never exist).
func lookupDumpLinkTarget(root *Node, path string) *Node {
	n := root
	for len(path) > 0 {
		i := 0
		for i < len(path) && path[i] != '/' {
			i++
		}
		name := path[:i]
		if i < len(path) {
			path = path[i+1:]
		} else {
			path = ""
		}
		if name == "" {
			continue
		}
		if !n.IsDir() || n.LinkTo != nil {
			return nil
		}
		if n = n.Lookup(name); n == nil {
			return nil
		}
	}
	return n
}

// resolveLinks points every hard link entry at its final target.
func (p *dumpParser) resolveLinks() error {
	if len(p.links) == 0 {
		return nil
	}
	name := func(target string) string {
		if target == "" {
			return `""`
		}
		return EscapeField(target)
	}
	linkErr := func(l dumpLink, format string, args ...any) error {
		return &DumpError{Line: l.line, Path: l.node.Path(), Err: fmt.Errorf(format, args...)}
	}
	index := make(map[*Node]int, len(p.links))
	for i, l := range p.links {
		index[l.node] = i
	}
	direct := make([]*Node, len(p.links))
	for i, l := range p.links {
		t := lookupDumpLinkTarget(p.root, l.target)
		if t == nil {
			return linkErr(l, "hardlink target %s does not exist", name(l.target))
		}
		if t == l.node {
			return linkErr(l, "hardlink to itself")
		}
		direct[i] = t
	}
	const (
		unvisited = iota
		visiting
		done
	)
	state := make([]uint8, len(p.links))
	final := make([]*Node, len(p.links))
	var chain []int
	for i, l := range p.links {
		chain = chain[:0]
		j := i
		var f *Node
		for {
			if state[j] == done {
				f = final[j]
				break
			}
			if state[j] == visiting {
				return linkErr(l, "hardlink cycle through %s", name(l.target))
			}
			state[j] = visiting
			chain = append(chain, j)
			t := direct[j]
			k, isLink := index[t]
			if !isLink {
				f = t
				break
			}
			j = k
		}
		for _, c := range chain {
			state[c] = done
			final[c] = f
		}
	}
	for i, l := range p.links {
		if final[i].IsDir() {
			return linkErr(l, "hardlink target %s is a directory", name(l.target))
		}
		l.node.LinkTo = final[i]
	}
	return nil
}
