package erofs

// A generator of random but valid composefs-dump(5) text for the property
// tests in property_test.go. From a seed it builds a tree that exercises the
// corners of the format (escaping, long names, inline and external files,
// every file type, whiteouts, hard links, xattr namespaces and sharing,
// large ids, negative and odd times, directories spanning several blocks)
// and prints it as a dump that parses in strict mode.
//
// Every tree it makes round-trips byte for byte through the writer, the
// reader and the dump printer, as upstream's own round-trip tests demand.
// That rules out a few inputs that are valid but lossy in upstream's format
// too; the comments of xattrKey and leaf say which.

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// genKind is what the generator decided a tree entry is.
type genKind int

const (
	genDir genKind = iota
	genInline
	genExternal
	genSymlink
	genFifo
	genSock
	genChr
	genBlk
	genWhiteout
	genLink // hard link, resolved to an earlier entry once the tree is built
)

// genNode is one entry of a generated tree, with raw (unescaped) values.
type genNode struct {
	kind     genKind
	name     string
	mode     uint32 // permission bits (and the type once finished)
	size     uint64
	nlink    uint64
	uid, gid uint32
	rdev     uint64
	mtime    Timespec
	payload  *string // nil: "-"
	content  *string // nil: "-"
	digest   []byte  // nil: "-"
	xattrs   []Xattr // in the order printed; duplicate keys allowed
	children []*genNode

	target *genNode // hard links: the entry linked to
	// linkVia is the entry whose path a hard link line names: the target
	// itself or another link to it (upstream follows chains).
	linkVia *genNode
	path    string // absolute raw path, set by finish
}

// genConfig records the choices a seed made for the whole tree.
type genConfig struct {
	Opts     WriteOptions
	Shuffled bool // siblings printed in random order
}

type treeGen struct {
	r   *rand.Rand
	cfg genConfig

	nodes    int // entries so far
	maxNodes int
	bigDirs  int // directories of > 200 entries still allowed

	mtimes     []Timespec // a few common times, so compact inodes occur
	sharedX    []Xattr    // pairs used on many entries
	bigShared  []Xattr    // > 128 pairs given to a few entries together
	bigUsers   int        // entries still to receive bigShared
	digests    [][]byte   // digests reused for deduplicated content
	minFirst   bool       // no time earlier than mtimes[0]: compact inodes
	fancyEsc   bool       // escape some printable bytes too
	upperHex   bool       // \xHH with upper case digits
	linkOthers bool       // hard links may point at non-regular files too
}

// genDump returns the dump text for seed, and the options to write it with.
func genDump(seed uint64) ([]byte, genConfig) {
	g := newTreeGen(seed)
	root := g.tree()
	return g.print(root), g.cfg
}

func newTreeGen(seed uint64) *treeGen {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := &treeGen{r: r}
	switch r.IntN(5) {
	case 0:
		g.cfg.Opts = WriteOptions{MinVersion: 0, MaxVersion: 0}
	case 1:
		g.cfg.Opts = WriteOptions{MinVersion: 1, MaxVersion: 1}
	default:
		g.cfg.Opts = DefaultWriteOptions
	}
	g.cfg.Shuffled = r.IntN(4) == 0
	g.fancyEsc = r.IntN(3) == 0
	g.upperHex = r.IntN(3) == 0
	g.linkOthers = r.IntN(3) == 0
	g.maxNodes = 50 + r.IntN(1500)
	if r.IntN(3) == 0 {
		g.bigDirs = 1 + r.IntN(2)
	}

	for range 1 + r.IntN(3) {
		g.mtimes = append(g.mtimes, g.randTime())
	}
	g.minFirst = r.IntN(2) == 0
	if g.minFirst {
		for i := range g.mtimes {
			if g.mtimes[i].Less(g.mtimes[0]) {
				g.mtimes[0], g.mtimes[i] = g.mtimes[i], g.mtimes[0]
			}
		}
	}
	for range 2 + r.IntN(20) {
		g.sharedX = append(g.sharedX, Xattr{g.xattrKey(), g.xattrValue()})
	}
	if r.IntN(6) == 0 {
		// More shareable pairs than an inode may reference (128).
		n := 120 + r.IntN(40)
		for i := range n {
			g.bigShared = append(g.bigShared, Xattr{
				Key:   fmt.Sprintf("user.big%03d.%s", i, g.word(1, 6)),
				Value: g.word(0, 8),
			})
		}
		g.bigUsers = 2 + r.IntN(3)
	}
	for range 1 + r.IntN(6) {
		g.digests = append(g.digests, g.bytes(32))
	}
	return g
}

func (g *treeGen) chance(n int) bool { return g.r.IntN(n) == 0 }

func (g *treeGen) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.r.UintN(256))
	}
	return b
}

// word returns lower-case letters and digits, min..max long.
func (g *treeGen) word(min, max int) string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789_"
	n := min + g.r.IntN(max-min+1)
	b := make([]byte, n)
	for i := range b {
		b[i] = chars[g.r.IntN(len(chars))]
	}
	return string(b)
}

// anyBytes returns n bytes without NUL and, if noSlash, without '/'.
func (g *treeGen) anyBytes(n int, noSlash bool) string {
	b := make([]byte, n)
	for i := range b {
		for {
			c := byte(g.r.UintN(256))
			if c != 0 && !(noSlash && c == '/') {
				b[i] = c
				break
			}
		}
	}
	return string(b)
}

var genOddNames = []string{
	"a b", " lead", "trail ", "x=y", "=", "==", `back\slash`, `\`, `\\n`, "-", "--x",
	"!bang", "#hash", "+plus", "\t", "tab\there", "new\nline", "cr\r", "\x7f",
	"caf\u00e9", "\u65e5\u672c\u8a9e", "\U0001F600", "\xff\xfe", "bad\x80utf8", "\xc3\x28",
	"0", "00", "ff", "0A", "FF", "...", ".hidden", "..x", "x.", "~",
}

// name returns a valid file name (1..255 bytes, no '/', no NUL, not "."
// or "..").
func (g *treeGen) name(atRoot bool) string {
	for {
		var s string
		switch g.r.IntN(20) {
		case 0, 1:
			s = genOddNames[g.r.IntN(len(genOddNames))] + g.word(0, 3)
		case 2:
			s = g.anyBytes(1+g.r.IntN(16), true)
		case 3:
			// 255 bytes, the longest name.
			if g.chance(2) {
				s = strings.Repeat(g.word(1, 1), MaxNameLen)
			} else {
				s = g.anyBytes(MaxNameLen, true)
			}
		case 4:
			s = g.word(1, 4) + " " + g.word(1, 6) + "=" + g.word(0, 3) + `\` + g.word(0, 2)
		case 5:
			s = g.word(1, 4) + "\u00e9\u00df\u4e2d" + g.word(0, 3)
		case 6:
			s = g.word(0, 3) + string(g.bytes(1+g.r.IntN(3))) + g.word(1, 3)
			if strings.ContainsAny(s, "/\x00") {
				continue
			}
		case 7:
			if atRoot {
				// The names of the whiteout stubs: the writer skips a stub
				// the root already has an entry for.
				s = fmt.Sprintf("%02x", g.r.IntN(256))
			} else {
				s = g.word(1, 12)
			}
		default:
			s = g.word(1, 16)
		}
		if s != "" && s != "." && s != ".." && len(s) <= MaxNameLen {
			return s
		}
	}
}

// randTime returns a time with varied seconds (negative ones too) and
// nanoseconds.
func (g *treeGen) randTime() Timespec {
	var t Timespec
	switch g.r.IntN(6) {
	case 0:
		t.Sec = 0
	case 1:
		t.Sec = -1 - g.r.Int64N(1<<33)
	case 2:
		t.Sec = g.r.Int64N(1 << 40)
	case 3:
		t.Sec = -g.r.Int64N(1 << 62)
	default:
		t.Sec = 1_000_000_000 + g.r.Int64N(1_000_000_000)
	}
	switch g.r.IntN(5) {
	case 0:
		t.Nsec = 0
	case 1:
		// Stored verbatim; nothing checks the ceiling of 1e9.
		t.Nsec = uint32(1_000_000_000 + g.r.Int64N(1<<32-1_000_000_000))
	default:
		t.Nsec = uint32(g.r.IntN(1_000_000_000))
	}
	return t
}

func (g *treeGen) mtime() Timespec {
	switch g.r.IntN(10) {
	case 0, 1, 2, 3:
		return g.mtimes[0]
	case 4, 5, 6:
		return g.mtimes[g.r.IntN(len(g.mtimes))]
	}
	for {
		t := g.randTime()
		if !g.minFirst || !t.Less(g.mtimes[0]) {
			return t
		}
	}
}

func (g *treeGen) id() uint32 {
	switch g.r.IntN(10) {
	case 0, 1, 2, 8, 9:
		return 0
	case 3:
		return 1000
	case 4:
		return uint32(g.r.IntN(65536))
	case 5:
		return 65535 + uint32(g.r.IntN(3)) // the compact limit
	default:
		return g.r.Uint32()
	}
}

func (g *treeGen) nlink() uint64 {
	switch g.r.IntN(20) {
	case 0:
		return 65535 + uint64(g.r.IntN(3))
	case 1:
		return uint64(g.r.Uint32())
	case 2, 3, 4:
		return 2 + uint64(g.r.IntN(10))
	case 5:
		return 0
	}
	return 1
}

func (g *treeGen) perm() uint32 {
	if g.chance(3) {
		return []uint32{0o644, 0o755, 0o600, 0o777, 0o4755, 0o1777, 0o2750, 0}[g.r.IntN(8)]
	}
	return uint32(g.r.IntN(0o10000))
}

// xattrKey returns a key that survives the round trip. Not generated:
// trusted.overlay.whiteout(s) and user.overlay.whiteout(s), which the
// writer's own whiteout encoding uses and every reader drops or acts on.
// Other trusted.overlay.* names are escaped by the writer.
func (g *treeGen) xattrKey() string {
	for {
		var k string
		switch g.r.IntN(24) {
		case 0, 1, 2, 3, 4, 5:
			k = "user." + g.word(1, 12)
		case 6, 7, 8:
			k = "trusted." + g.word(1, 12)
		case 9, 10:
			k = "security." + []string{"selinux", "ima", "evm", "capability", g.word(1, 8)}[g.r.IntN(5)]
		case 11:
			k = xattrACLAccess
		case 12:
			k = xattrACLDefault
		case 13, 14:
			k = "trusted.overlay." + []string{"redirect", "metacopy", "opaque", "origin", "overlay.x", g.word(1, 8)}[g.r.IntN(6)]
		case 15:
			k = "user.overlay." + []string{"redirect", "opaque", "metacopy", g.word(1, 8)}[g.r.IntN(4)]
		case 16:
			// Odd bytes in the name: '=', space, backslash, non-UTF-8.
			k = []string{"user.", "trusted.", "security."}[g.r.IntN(3)] + g.anyBytes(1+g.r.IntN(20), false)
		case 17:
			// The longest key.
			p := []string{"user.", "trusted.", "security.", "trusted.overlay.x"}[g.r.IntN(4)]
			k = p + strings.Repeat("k", MaxXattrNameLen-len(p))
			if strings.HasPrefix(k, xattrOverlayPrefix) {
				// The writer's escaping lengthens it by 8 bytes.
				k = k[:MaxXattrNameLen-8]
			}
		case 18:
			// Prefix matches that are not the whole name, and a name in no
			// known namespace (stored in full).
			k = []string{xattrACLAccess + "_x", xattrACLDefault + "." + g.word(1, 4), "system." + g.word(1, 8), "os2." + g.word(1, 5), "user."}[g.r.IntN(5)]
		default:
			k = "user." + g.word(1, 6) + "." + g.word(1, 6)
		}
		switch k {
		case "trusted.overlay.whiteout", "trusted.overlay.whiteouts",
			xattrUserWhiteout, xattrUserWhiteouts:
			continue
		}
		if len(k) > MaxXattrNameLen || strings.IndexByte(k, 0) >= 0 {
			continue
		}
		return k
	}
}

func (g *treeGen) xattrValue() string {
	switch g.r.IntN(10) {
	case 0:
		return ""
	case 1:
		return string(g.bytes(g.r.IntN(64))) // binary, NUL included
	case 2:
		return string(g.bytes(200 + g.r.IntN(1800)))
	case 3:
		return "-"
	case 4:
		return "a=b c\\d\n"
	case 5:
		return "system_u:object_r:" + g.word(1, 10) + "_t:s0\x00"
	}
	return g.word(0, 20)
}

// xattrs returns the xattrs of one entry, within a budget far below
// upstream's per-inode limit (the writer's own overlay xattrs go on top).
func (g *treeGen) xattrs() []Xattr {
	var out []Xattr
	if g.bigUsers > 0 && g.chance(8) {
		g.bigUsers--
		out = append(out, g.bigShared...)
	}
	n := 0
	switch g.r.IntN(10) {
	case 0, 1, 2, 3:
	case 4, 5, 6:
		n = 1 + g.r.IntN(2)
	default:
		n = 1 + g.r.IntN(8)
	}
	for range n {
		if g.r.IntN(5) < 3 {
			out = append(out, g.sharedX[g.r.IntN(len(g.sharedX))])
		} else {
			out = append(out, Xattr{g.xattrKey(), g.xattrValue()})
		}
	}
	if len(out) > 1 && g.chance(10) {
		// A repeated key: the later value wins.
		out = append(out, Xattr{out[g.r.IntN(len(out))].Key, g.xattrValue()})
	}
	for i, x := range out {
		if (x.Key == "trusted.overlay.opaque" || x.Key == xattrUserOpaque) && len(x.Value) > 16 {
			// Upstream mkcomposefs fails (ERANGE) when it replaces a
			// long value of these with "x" in a directory holding a
			// whiteout: its cloned tree starts the xattr size count at
			// 0, and removing the old value underflows it. Keep them
			// short so that the trees stay comparable with upstream.
			out[i].Value = x.Value[:16]
		}
	}
	g.r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	// Keep the budget (the last value of each key counts).
	for genXattrCost(out) > 16000 {
		out = out[:len(out)-1]
	}
	return out
}

func genXattrCost(xs []Xattr) int {
	last := map[string]string{}
	for _, x := range xs {
		last[x.Key] = x.Value
	}
	cost := xattrIbodyHeaderSize
	for k, v := range last {
		cost += 2*xattrEntryHeaderSize - 1 + len(k) + len(v)
	}
	return cost
}

func (g *treeGen) contentSize() int {
	switch g.r.IntN(12) {
	case 0:
		return 0
	case 1:
		return []int{1, 2047, 2048, 2049, 4095, 4096, 4097, 4999, MaxInlineContent}[g.r.IntN(9)]
	case 2, 3:
		return g.r.IntN(MaxInlineContent + 1)
	}
	return 1 + g.r.IntN(100)
}

func (g *treeGen) externalSize() uint64 {
	switch g.r.IntN(30) {
	case 0:
		return 1
	case 1:
		return []uint64{4095, 4096, 4097, 1 << 32, 1<<32 - 1, 1<<32 + 1, 1 << 40}[g.r.IntN(7)]
	case 2:
		// Beyond 2^43 bytes a file needs several chunks; 1024 is the most
		// upstream accepts, and > 1016 do not fit inline any more.
		bits := 43 + g.r.IntN(10)
		return 1<<bits + g.r.Uint64N(1<<bits)
	case 3:
		return maxExternalSize - g.r.Uint64N(8<<43)
	}
	return 1 + g.r.Uint64N(uint64(1)<<(1+g.r.IntN(40)))
}

func digestPath(d []byte) string {
	h := hex.EncodeToString(d)
	return h[:2] + "/" + h[2:]
}

func strPtr(s string) *string { return &s }

// leaf returns a new non-directory entry of a random kind.
func (g *treeGen) leaf(name string) *genNode {
	n := &genNode{name: name, mode: g.perm(), nlink: g.nlink(), uid: g.id(), gid: g.id(), mtime: g.mtime()}
	switch k := g.r.IntN(100); {
	case k < 28:
		n.kind = genInline
		size := g.contentSize()
		n.size = uint64(size)
		if size > 0 {
			c := string(g.bytes(size))
			if g.chance(2) {
				c = strings.Repeat(g.word(1, 3), size)[:size]
			}
			n.content = &c
		}
		if g.chance(10) {
			// A payload and digest on a file with content (or an empty
			// one) are ignored by the writer.
			d := g.bytes(32)
			n.payload = strPtr(digestPath(d))
			n.digest = d
		}
	case k < 55:
		n.kind = genExternal
		n.size = g.externalSize()
		var d []byte
		if g.chance(3) {
			d = g.digests[g.r.IntN(len(g.digests))]
		} else {
			d = g.bytes(32)
		}
		if !g.chance(5) {
			n.digest = d
		}
		switch g.r.IntN(12) {
		case 0:
			// No payload: metacopy only, no redirect.
		case 1:
			// A free-form payload; a leading '/' is doubled in the
			// redirect and stripped once by readers.
			n.payload = strPtr([]string{"/abs/" + g.word(1, 10), "rel/" + g.word(1, 10), g.anyBytes(1+g.r.IntN(100), false)}[g.r.IntN(3)])
		default:
			n.payload = strPtr(digestPath(d))
		}
	case k < 68:
		n.kind = genSymlink
		var t string
		switch g.r.IntN(8) {
		case 0:
			t = g.anyBytes(1+g.r.IntN(MaxSymlinkLen), false)
		case 1:
			t = g.anyBytes([]int{1, 4095, 4094, 4000, 4096 - 32 - 12 - 1, 4096 - 64}[g.r.IntN(6)], false)
		case 2:
			t = "-"
		default:
			t = "../" + g.word(1, 20) + "/" + g.name(false)
			if strings.IndexByte(t, 0) >= 0 {
				t = g.word(1, 10)
			}
		}
		n.payload = &t
		n.size = uint64(len(t))
	case k < 74:
		n.kind = genFifo
	case k < 78:
		n.kind = genSock
	case k < 85:
		n.kind = genChr
		// Nonzero in the low 32 bits: those are what the format keeps,
		// and 0 there makes a whiteout.
		n.rdev = uint64(1 + g.r.Uint32N(1<<32-1))
		if g.chance(5) {
			n.rdev |= g.r.Uint64() &^ (1<<32 - 1)
		}
	case k < 90:
		n.kind = genBlk
		if !g.chance(6) {
			n.rdev = g.r.Uint64()
		}
	default:
		n.kind = genWhiteout
		n.nlink = 1
		if g.chance(8) {
			// Only the low 32 bits of RDEV are kept: still a whiteout.
			n.rdev = uint64(1+g.r.Uint32()) << 32
		}
	}
	switch n.kind {
	case genFifo, genSock, genChr, genBlk, genWhiteout:
		// SIZE is not stored for these; keep it small enough that it
		// does not make the inode extended (upstream decides that from
		// the size it was given, and would not read it back).
		if g.chance(8) {
			n.size = uint64(g.r.Uint32())
		}
	}
	if n.kind != genWhiteout || g.chance(2) {
		n.xattrs = g.xattrs()
	}
	return n
}

// dir fills d with children, recursing up to depth 6.
func (g *treeGen) dir(d *genNode, depth int) {
	count := 0
	switch {
	case g.bigDirs > 0 && g.chance(4) && g.nodes < g.maxNodes:
		g.bigDirs--
		count = 201 + g.r.IntN(400)
	case depth > 0 && g.chance(6):
		count = 0
	default:
		count = 1 + g.r.IntN(12)
	}
	names := map[string]bool{}
	for i := 0; i < count && (g.nodes < g.maxNodes || count > 200); i++ {
		name := g.name(depth == 0)
		if count > 200 && g.r.IntN(3) > 0 {
			name = g.word(10, 40)
		}
		if names[name] {
			continue
		}
		names[name] = true
		g.nodes++
		var c *genNode
		switch k := g.r.IntN(100); {
		case k < 18 && depth < 6 && count <= 200:
			c = &genNode{kind: genDir, name: name, mode: g.perm(), nlink: uint64(g.r.IntN(5)),
				uid: g.id(), gid: g.id(), mtime: g.mtime(), size: uint64(g.r.IntN(9000))}
			c.xattrs = g.xattrs()
			g.dir(c, depth+1)
		case k >= 18 && k < 26:
			c = &genNode{kind: genLink, name: name}
		default:
			c = g.leaf(name)
		}
		d.children = append(d.children, c)
	}
	slices.SortFunc(d.children, func(a, b *genNode) int { return strings.Compare(a.name, b.name) })
}

// tree builds the whole tree and resolves hard links.
func (g *treeGen) tree() *genNode {
	root := &genNode{kind: genDir, mode: g.perm(), nlink: 2, uid: g.id(), gid: g.id(), mtime: g.mtime(), size: 4096}
	root.xattrs = g.xattrs()
	if g.chance(3) {
		// Copied onto the whiteout stubs.
		root.xattrs = append(root.xattrs, Xattr{xattrSecuritySELinux, "system_u:object_r:root_t:s0\x00"})
	}
	g.dir(root, 0)
	// Hard links point at an entry earlier in depth-first sorted order:
	// a reader makes the first occurrence the inode, so only then does
	// the tree read back the same.
	var seen []*genNode // possible targets so far
	var links []*genNode
	var walk func(n *genNode, path string)
	walk = func(n *genNode, path string) {
		n.path = path
		if n.kind == genLink {
			var cands []*genNode
			for _, s := range seen {
				if s.kind == genExternal || s.kind == genInline || g.linkOthers && s.kind != genWhiteout {
					cands = append(cands, s)
				}
			}
			if len(cands) == 0 {
				*n = *g.leaf(n.name)
				n.path = path
			} else {
				n.target = cands[g.r.IntN(len(cands))]
				n.linkVia = n.target
				for _, l := range links {
					if l.target == n.target && g.chance(2) {
						n.linkVia = l // a chain through another link
						break
					}
				}
				links = append(links, n)
				return
			}
		}
		if n.kind != genDir {
			seen = append(seen, n)
			return
		}
		for _, c := range n.children {
			p := path + "/" + c.name
			if path == "/" {
				p = "/" + c.name
			}
			walk(c, p)
		}
	}
	walk(root, "/")
	return root
}

// esc escapes raw for a dump field. Bytes that must be escaped are;
// with fancyEsc some others are too, in upper or lower case hex.
func (g *treeGen) esc(dst []byte, raw string, escEq, loneDash bool) []byte {
	if loneDash && raw == "-" {
		return append(dst, `\x2d`...)
	}
	hexd := lowerHex
	if g.upperHex {
		hexd = "0123456789ABCDEF"
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		must := c <= ' ' || c >= 0x7f || c == '\\' || (escEq && c == '=')
		if !must && !(g.fancyEsc && g.chance(20)) {
			dst = append(dst, c)
			continue
		}
		switch {
		case c == '\\':
			dst = append(dst, `\\`...)
		case c == '\n' && !g.chance(3):
			dst = append(dst, `\n`...)
		case c == '\t' && !g.chance(3):
			dst = append(dst, `\t`...)
		case c == '\r' && !g.chance(3):
			dst = append(dst, `\r`...)
		default:
			dst = append(dst, '\\', 'x', hexd[c>>4], hexd[c&15])
		}
	}
	return dst
}

// print writes the tree as a dump: a directory before its entries, in
// sorted order or (cfg.Shuffled) any order.
func (g *treeGen) print(root *genNode) []byte {
	var b []byte
	var walk func(n *genNode)
	walk = func(n *genNode) {
		b = g.line(b, n)
		order := n.children
		if g.cfg.Shuffled {
			order = slices.Clone(order)
			g.r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		for _, c := range order {
			walk(c)
		}
	}
	walk(root)
	return b
}

func (n *genNode) typeBits() uint32 {
	switch n.kind {
	case genDir:
		return ModeDir
	case genInline, genExternal:
		return ModeReg
	case genSymlink:
		return ModeSymlink
	case genFifo:
		return ModeFifo
	case genSock:
		return ModeSock
	case genChr, genWhiteout:
		return ModeChr
	case genBlk:
		return ModeBlk
	}
	panic("no type")
}

func (g *treeGen) line(b []byte, n *genNode) []byte {
	b = g.esc(b, n.path, false, false)
	src := n
	if n.kind == genLink {
		src = n.target // fields other than PATH, MODE and PAYLOAD are ignored
	}
	b = append(b, ' ')
	b = strconv.AppendUint(b, src.size, 10)
	b = append(b, ' ')
	if n.kind == genLink {
		b = append(b, '@')
		mode := src.typeBits() | src.mode
		if g.chance(5) {
			mode = []uint32{ModeReg, ModeFifo, ModeSymlink, ModeChr}[g.r.IntN(4)] | g.perm()
		}
		b = strconv.AppendUint(b, uint64(mode), 8)
	} else {
		b = strconv.AppendUint(b, uint64(n.typeBits()|n.mode), 8)
	}
	b = append(b, ' ')
	b = strconv.AppendUint(b, src.nlink, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.uid), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.gid), 10)
	b = append(b, ' ')
	if n.kind == genChr || n.kind == genBlk || n.kind == genWhiteout {
		b = strconv.AppendUint(b, n.rdev, 10)
	} else {
		b = append(b, '0') // strict mode: RDEV only on devices
	}
	b = append(b, ' ')
	b = strconv.AppendInt(b, src.mtime.Sec, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(src.mtime.Nsec), 10)
	b = append(b, ' ')
	switch {
	case n.kind == genLink:
		b = g.esc(b, n.linkVia.path, false, false)
	case n.payload != nil:
		b = g.esc(b, *n.payload, false, true)
	default:
		b = append(b, '-')
	}
	b = append(b, ' ')
	if n.kind != genLink && n.content != nil {
		b = g.esc(b, *n.content, false, true)
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	if n.kind != genLink && n.digest != nil {
		h := hex.EncodeToString(n.digest)
		if g.upperHex {
			h = strings.ToUpper(h)
		}
		b = append(b, h...)
	} else {
		b = append(b, '-')
	}
	if n.kind != genLink {
		for _, x := range n.xattrs {
			b = append(b, ' ')
			b = g.esc(b, x.Key, true, false)
			b = append(b, '=')
			b = g.esc(b, x.Value, g.r.IntN(3) > 0, false)
		}
	}
	return append(b, '\n')
}

// genLines returns the number of lines of a dump, for messages.
func genLines(dump []byte) int { return bytes.Count(dump, []byte{'\n'}) }
