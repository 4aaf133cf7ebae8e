package bootcfg

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// entrySuffix ends every entry file name. systemd-boot matches it without
// regard to case, since the ESP is usually FAT.
const entrySuffix = ".conf"

// BootCounter is the boot counting state kept in an entry's file name
// (<ID>+<Left>[-<Done>].conf), as the Boot Loader Specification's
// automatic boot assessment defines it. The boot loader renames the file
// before each try (+3 → +2-1 → +1-2 → +0-3); a successful boot removes the
// counter ("blesses" the entry); an entry with no tries left is sorted
// last and not booted by default.
type BootCounter struct {
	Left int // tries left
	Done int // tries made, 0 if the name has no "-DONE"
}

// ParseEntryFileName splits an entry file name into its ID and boot
// counter. It follows systemd-boot: the counter is the text after the last
// '+' and must run right up to the ".conf"; anything else (no '+', not
// digits, a value above 2^31-1) is part of the ID, and counter is nil. ok
// is false for names that are not entry files at all.
func ParseEntryFileName(name string) (id string, counter *BootCounter, ok bool) {
	if len(name) <= len(entrySuffix) || !strings.EqualFold(name[len(name)-len(entrySuffix):], entrySuffix) {
		return "", nil, false
	}
	base := name[:len(name)-len(entrySuffix)]
	plus := strings.LastIndexByte(base, '+')
	if plus < 0 {
		return base, nil, true
	}
	leftText, doneText, hasDone := strings.Cut(base[plus+1:], "-")
	left, okLeft := parseTries(leftText)
	done, okDone := 0, true
	if hasDone {
		done, okDone = parseTries(doneText)
	}
	if !okLeft || !okDone {
		return base, nil, true
	}
	return base[:plus], &BootCounter{Left: left, Done: done}, true
}

// parseTries reads a counter: one or more ASCII digits, at most 2^31-1.
func parseTries(s string) (int, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > math.MaxInt32 {
		return 0, false
	}
	return int(n), true
}

// FileName returns the file name for the entry's ID and counter. A counter
// with no tries done is written "+LEFT", the form a new counted entry
// starts with.
func (e *Entry) FileName() string {
	return entryFileName(e.ID, e.Counter)
}

func entryFileName(id string, c *BootCounter) string {
	if c == nil {
		return id + entrySuffix
	}
	if c.Done == 0 {
		return fmt.Sprintf("%s+%d%s", id, c.Left, entrySuffix)
	}
	return fmt.Sprintf("%s+%d-%d%s", id, c.Left, c.Done, entrySuffix)
}

// CheckEntryID reports whether id can name an entry that reads back as
// the same ID: letters, digits and "-_.,@~^+" only (the BLS spec asks for
// portable names, and the ESP is FAT), not starting with '.' (hidden, and
// our temporary files) or "auto-" (systemd-boot skips those), and not
// ending in something that reads as a boot counter.
func CheckEntryID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("empty boot entry ID")
	case len(id) > 200:
		// FAT allows 255 characters; leave room for a counter,
		// ".conf" and a temporary file's suffix.
		return fmt.Errorf("boot entry ID %q is longer than 200 characters", shorten(id))
	case id[0] == '.':
		return fmt.Errorf("boot entry ID %q starts with '.'", id)
	case strings.HasPrefix(strings.ToLower(id), "auto-"):
		return fmt.Errorf("boot entry ID %q starts with \"auto-\", which systemd-boot reserves", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isDigit(c) && !isLetter(c) && strings.IndexByte("-_.,@~^+", c) < 0 {
			return fmt.Errorf("boot entry ID %q contains %q; use letters, digits and -_.,@~^+", id, id[i:i+1])
		}
	}
	if got, c, _ := ParseEntryFileName(id + entrySuffix); got != id || c != nil {
		return fmt.Errorf("boot entry ID %q ends like a boot counter (+N or +N-M)", id)
	}
	return nil
}
