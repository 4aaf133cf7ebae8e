package erofs

import (
	"bufio"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
)

// DumpPrintOptions control WriteDump.
type DumpPrintOptions struct {
	// TopLevel, if not empty, limits the output to the root and the
	// top-level entries of these names with their subtrees, like
	// composefs-info --filter=NAME.
	TopLevel []string
}

// WriteDump writes the tree as composefs-info dump does: one line per
// entry, depth first with children in name order.
//
// A hard link entry prints its target's fields, with '@' before the mode
// and the target's absolute path as PAYLOAD. When the target is not
// printed (TopLevel leaves it out) the first link to it stands in for it,
// as it would in a tree read from a filtered image.
//
// Only what ParseDump keeps is printed: PAYLOAD for regular files and
// symlinks, CONTENT and DIGEST for regular files, RDEV for devices. A
// symlink's SIZE is the length of its target and a file with content has
// the length of its content as SIZE; other sizes are printed as stored.
func WriteDump(w io.Writer, root *Node, opts DumpPrintOptions) error {
	if root == nil {
		return errors.New("erofs: WriteDump: nil root")
	}
	d := &dumpPrinter{bw: bufio.NewWriterSize(w, 64<<10)}
	if len(opts.TopLevel) > 0 {
		d.keep = make(map[string]bool, len(opts.TopLevel))
		for _, name := range opts.TopLevel {
			d.keep[name] = true
		}
	}
	d.findTargets(root, true)
	if len(d.paths) > 0 {
		d.path = d.path[:0]
		d.recordTargetPaths(root, true)
	}
	d.path = d.path[:0]
	d.walk(root, true)
	if d.err != nil {
		return d.err
	}
	return d.bw.Flush()
}

type dumpPrinter struct {
	bw   *bufio.Writer
	err  error
	keep map[string]bool // top-level names to print; nil for all
	// paths maps every hard link target to the escaped path it is
	// printed under, "" while unknown.
	paths map[*Node]string
	path  []byte // escaped path of the current node, "" for the root
	buf   []byte // the current line
}

// children returns n's children to print, in name order.
func (d *dumpPrinter) children(n *Node, top bool) []*Node {
	if n.LinkTo != nil {
		return nil
	}
	c := n.Children
	if !slices.IsSortedFunc(c, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) }) {
		c = slices.Clone(c)
		slices.SortStableFunc(c, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })
	}
	if top && d.keep != nil {
		var kept []*Node
		for _, x := range c {
			if d.keep[x.Name] {
				kept = append(kept, x)
			}
		}
		c = kept
	}
	return c
}

// linkFinalTarget follows a chain of links; the tree model never has chains,
// but a malformed tree must not hang the printer.
func linkFinalTarget(n *Node) *Node {
	t := n.LinkTo
	for i := 0; t.LinkTo != nil && i < 1000; i++ {
		t = t.LinkTo
	}
	return t
}

func (d *dumpPrinter) findTargets(n *Node, top bool) {
	if n.LinkTo != nil {
		if d.paths == nil {
			d.paths = make(map[*Node]string)
		}
		d.paths[linkFinalTarget(n)] = ""
		return
	}
	for _, c := range d.children(n, top) {
		d.findTargets(c, false)
	}
}

func (d *dumpPrinter) recordTargetPaths(n *Node, top bool) {
	if n.LinkTo != nil {
		return
	}
	if _, ok := d.paths[n]; ok {
		d.paths[n] = string(d.path)
	}
	l := len(d.path)
	for _, c := range d.children(n, top) {
		d.path = append(d.path[:l], '/')
		d.path = appendEscaped(d.path, c.Name, 0)
		d.recordTargetPaths(c, false)
	}
	d.path = d.path[:l]
}

func (d *dumpPrinter) walk(n *Node, top bool) {
	if d.err != nil {
		return
	}
	d.line(n)
	l := len(d.path)
	for _, c := range d.children(n, top) {
		d.path = append(d.path[:l], '/')
		d.path = appendEscaped(d.path, c.Name, 0)
		d.walk(c, false)
	}
	d.path = d.path[:l]
}

// line prints the line of n, whose escaped path is d.path.
func (d *dumpPrinter) line(n *Node) {
	b := d.buf[:0]
	if len(d.path) == 0 {
		b = append(b, '/')
	} else {
		b = append(b, d.path...)
	}
	t := n
	var linkPath string
	if n.LinkTo != nil {
		t = linkFinalTarget(n)
		if p := d.paths[t]; p != "" {
			linkPath = p
		} else {
			// The target is not printed: this entry stands in for it.
			d.paths[t] = string(d.path)
		}
	}
	typ := t.Mode & ModeTypeMask
	size := t.Size
	switch {
	case typ == ModeSymlink:
		size = uint64(len(t.Payload))
	case typ == ModeReg && len(t.Content) > 0:
		size = uint64(len(t.Content))
	}
	b = append(b, ' ')
	b = strconv.AppendUint(b, size, 10)
	b = append(b, ' ')
	if linkPath != "" {
		b = append(b, '@')
	}
	b = strconv.AppendUint(b, uint64(t.Mode), 8)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(t.Nlink), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(t.UID), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(t.GID), 10)
	b = append(b, ' ')
	if typ == ModeChr || typ == ModeBlk {
		b = strconv.AppendUint(b, t.Rdev, 10)
	} else {
		b = append(b, '0')
	}
	b = append(b, ' ')
	b = strconv.AppendInt(b, t.Mtime.Sec, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(t.Mtime.Nsec), 10)

	b = append(b, ' ')
	switch {
	case linkPath != "":
		b = append(b, linkPath...)
	case (typ == ModeReg || typ == ModeSymlink) && t.Payload != "":
		b = appendEscaped(b, t.Payload, escLoneDash)
	default:
		b = append(b, '-')
	}
	b = append(b, ' ')
	if typ == ModeReg && len(t.Content) > 0 {
		b = appendEscaped(b, t.Content, escLoneDash)
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	if typ == ModeReg && !t.Digest.IsZero() {
		b = hex.AppendEncode(b, t.Digest[:])
	} else {
		b = append(b, '-')
	}
	for _, x := range t.Xattrs {
		b = append(b, ' ')
		b = appendEscaped(b, x.Key, escEqual)
		b = append(b, '=')
		b = appendEscaped(b, x.Value, escEqual)
	}
	b = append(b, '\n')
	if _, err := d.bw.Write(b); err != nil {
		d.err = err
	}
	d.buf = b
}
