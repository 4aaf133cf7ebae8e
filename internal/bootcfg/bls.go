package bootcfg

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Entry is a Boot Loader Specification type #1 entry
// (loader/entries/<ID>.conf).
type Entry struct {
	// ID is the file name without ".conf" and without a boot counter.
	// WriteEntry needs it; ParseEntry leaves it empty.
	ID string
	// File is the name the entry was read from or last written to,
	// including any boot counter; empty for an entry not on disk.
	File string
	// Counter is the boot counter from the file name; nil when the entry
	// is not being counted (never was, or has been blessed).
	Counter *BootCounter

	Title        string
	Version      string
	MachineID    string
	SortKey      string
	Linux        string
	Initrd       []string // in order; each is loaded
	EFI          string
	Options      []string // one per options line; the kernel gets them joined by spaces
	Devicetree   string
	Architecture string
	// Extra holds lines with other keys, in file order, so that
	// rewriting an entry keeps what another tool put there.
	Extra []Field
}

// Field is one "key value" line.
type Field struct {
	Key, Value string
}

// Keys with a field of their own in Entry, in the order Marshal writes them.
const (
	keyTitle        = "title"
	keyVersion      = "version"
	keyMachineID    = "machine-id"
	keySortKey      = "sort-key"
	keyOptions      = "options"
	keyLinux        = "linux"
	keyInitrd       = "initrd"
	keyEFI          = "efi"
	keyDevicetree   = "devicetree"
	keyArchitecture = "architecture"
)

// maxEntrySize bounds what is read from one entry file; real entries are
// a few hundred bytes, and /boot may hold anything.
const maxEntrySize = 1 << 20

// ParseEntry reads an entry in the syntax systemd-boot reads: a line is a
// key, then spaces or tabs, then the value to the end of the line, with
// surrounding spaces and tabs dropped; lines end at "\n", "\r\n" or "\r";
// blank lines and lines starting with '#' are ignored. Unlike systemd-boot
// this does not remove double quotes around a value: values are kept as
// written so that an entry survives a rewrite unchanged.
//
// A repeated single-valued key replaces the earlier value, as in
// systemd-boot. A known key without a value, a NUL byte or text that is
// not UTF-8 is an error naming the line.
func ParseEntry(r io.Reader) (*Entry, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxEntrySize+1))
	if err != nil {
		return nil, fmt.Errorf("read boot entry: %w", err)
	}
	if len(data) > maxEntrySize {
		return nil, fmt.Errorf("boot entry larger than %d bytes", maxEntrySize)
	}
	e := &Entry{}
	err = eachLine(data, func(key, value string, hasValue bool) error {
		return e.set(key, value, hasValue)
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Entry) set(key, value string, hasValue bool) error {
	if !hasValue {
		switch key {
		case keyOptions:
			// systemd-boot ignores an options line without a value;
			// keeping it would add nothing to the command line.
			return nil
		case keyTitle, keyVersion, keyMachineID, keySortKey, keyLinux, keyInitrd,
			keyEFI, keyDevicetree, keyArchitecture:
			return fmt.Errorf("%s has no value", key)
		}
	}
	switch key {
	case keyTitle:
		e.Title = value
	case keyVersion:
		e.Version = value
	case keyMachineID:
		e.MachineID = value
	case keySortKey:
		e.SortKey = value
	case keyLinux:
		e.Linux = value
	case keyInitrd:
		e.Initrd = append(e.Initrd, value)
	case keyEFI:
		e.EFI = value
	case keyOptions:
		e.Options = append(e.Options, value)
	case keyDevicetree:
		e.Devicetree = value
	case keyArchitecture:
		e.Architecture = value
	default:
		e.Extra = append(e.Extra, Field{Key: key, Value: value})
	}
	return nil
}

// eachLine splits data into "key value" lines as described at ParseEntry
// and calls fn for each. Errors name the line, counting from 1.
func eachLine(data []byte, fn func(key, value string, hasValue bool) error) error {
	n := 0
	for len(data) > 0 {
		n++
		end := bytes.IndexAny(data, "\r\n")
		var line []byte
		if end < 0 {
			line, data = data, nil
		} else {
			line = data[:end]
			if data[end] == '\r' && end+1 < len(data) && data[end+1] == '\n' {
				end++
			}
			data = data[end+1:]
		}
		if err := checkText(line); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		s := strings.Trim(string(line), " \t")
		if s == "" || s[0] == '#' {
			continue
		}
		key, value, hasValue := s, "", false
		if i := strings.IndexAny(s, " \t"); i >= 0 {
			key, value, hasValue = s[:i], strings.TrimLeft(s[i:], " \t"), true
		}
		if err := fn(key, value, hasValue); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
	}
	return nil
}

func checkText(b []byte) error {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return fmt.Errorf("NUL byte at column %d", i+1)
	}
	if !utf8.Valid(b) {
		return fmt.Errorf("not valid UTF-8")
	}
	return nil
}

// Marshal returns the entry file's contents: known keys in a fixed order,
// then the extra lines in their order, one "key value" per line. Empty
// single-valued fields are left out. The output depends only on the
// fields, so writing an unchanged entry gives identical bytes.
func (e *Entry) Marshal() []byte {
	var b bytes.Buffer
	line := func(key, value string) {
		b.WriteString(key)
		if value != "" {
			b.WriteByte(' ')
			b.WriteString(value)
		}
		b.WriteByte('\n')
	}
	single := func(key, value string) {
		if value != "" {
			line(key, value)
		}
	}
	single(keyTitle, e.Title)
	single(keyVersion, e.Version)
	single(keyMachineID, e.MachineID)
	single(keySortKey, e.SortKey)
	for _, o := range e.Options {
		if o != "" {
			line(keyOptions, o)
		}
	}
	single(keyLinux, e.Linux)
	for _, i := range e.Initrd {
		line(keyInitrd, i)
	}
	single(keyEFI, e.EFI)
	single(keyDevicetree, e.Devicetree)
	single(keyArchitecture, e.Architecture)
	for _, f := range e.Extra {
		line(f.Key, f.Value)
	}
	return b.Bytes()
}

// Cmdline returns the kernel command line the entry passes: its options
// lines joined by spaces.
func (e *Entry) Cmdline() Cmdline {
	return ParseCmdline(strings.Join(e.Options, " "))
}

// SetCmdline replaces the options lines with one line holding c.
func (e *Entry) SetCmdline(c Cmdline) {
	if len(c) == 0 {
		e.Options = nil
		return
	}
	e.Options = []string{c.String()}
}
