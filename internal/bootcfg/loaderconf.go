package bootcfg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
)

// LoaderConf is systemd-boot's loader/loader.conf. cfs-deploy sets the
// default entry and the menu timeout; every other line belongs to someone
// else and is kept as it was.
type LoaderConf struct {
	// Default is a glob matched against entry IDs (with ".conf"), or
	// "@saved"; "" means no default line.
	Default string
	// Timeout is seconds, or "menu-force", "menu-hidden",
	// "menu-disabled"; "" means no timeout line.
	Timeout string
	// Lines are the file's lines as read. Marshal writes them back,
	// putting Default and Timeout in place of the first default and
	// timeout lines and dropping later ones.
	Lines []string
}

const (
	keyDefault = "default"
	keyTimeout = "timeout"
)

// ParseLoaderConf reads loader.conf. As in systemd-boot, a later default
// or timeout line overrides an earlier one.
func ParseLoaderConf(r io.Reader) (*LoaderConf, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxEntrySize+1))
	if err != nil {
		return nil, fmt.Errorf("read loader.conf: %w", err)
	}
	if len(data) > maxEntrySize {
		return nil, fmt.Errorf("loader.conf larger than %d bytes", maxEntrySize)
	}
	lc := &LoaderConf{}
	err = eachLine(data, func(key, value string, hasValue bool) error {
		if !hasValue {
			return nil // systemd-boot ignores a key without a value
		}
		switch key {
		case keyDefault:
			lc.Default = value
		case keyTimeout:
			lc.Timeout = value
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("parse loader.conf: %w", err)
	}
	lc.Lines = splitLines(string(data))
	return lc, nil
}

// splitLines splits at the same line ends eachLine uses, so both see the
// same lines.
func splitLines(s string) []string {
	var lines []string
	for s != "" {
		i := strings.IndexAny(s, "\r\n")
		if i < 0 {
			lines = append(lines, s)
			break
		}
		lines = append(lines, s[:i])
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			i++
		}
		s = s[i+1:]
	}
	return lines
}

// Marshal returns the file contents, with "\n" line ends.
func (lc *LoaderConf) Marshal() []byte {
	var b bytes.Buffer
	wrote := map[string]bool{}
	emit := func(key, value string) {
		if !wrote[key] && value != "" {
			fmt.Fprintf(&b, "%s %s\n", key, value)
		}
		wrote[key] = true
	}
	for _, line := range lc.Lines {
		switch lineKey(line) {
		case keyDefault:
			emit(keyDefault, lc.Default)
		case keyTimeout:
			emit(keyTimeout, lc.Timeout)
		default:
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	emit(keyDefault, lc.Default)
	emit(keyTimeout, lc.Timeout)
	return b.Bytes()
}

// lineKey returns the key of a "key value" line, or "" for blank lines,
// comments and lines without a value (which systemd-boot ignores).
func lineKey(line string) string {
	s := strings.Trim(line, " \t")
	if s == "" || s[0] == '#' {
		return ""
	}
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return ""
	}
	return s[:i]
}

// ReadLoaderConf reads the loader.conf at path. A missing file is an empty
// configuration, since writing one is how a first default gets set.
func ReadLoaderConf(path string) (*LoaderConf, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &LoaderConf{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read loader.conf: %w", err)
	}
	defer f.Close()
	lc, err := ParseLoaderConf(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return lc, nil
}

// WriteLoaderConf replaces the file at path atomically.
func WriteLoaderConf(path string, lc *LoaderConf) error {
	for _, f := range []Field{{keyDefault, lc.Default}, {keyTimeout, lc.Timeout}} {
		if err := checkValue(f.Value); err != nil {
			return fmt.Errorf("write %s: %s %q: %w", path, f.Key, shorten(f.Value), err)
		}
	}
	for i, line := range lc.Lines {
		if strings.ContainsAny(line, "\r\n") {
			return fmt.Errorf("write %s: line %d contains a line break", path, i+1)
		}
	}
	if err := atomicfile.WriteFile(path, lc.Marshal(), 0o644); err != nil {
		return fmt.Errorf("write loader.conf: %w", err)
	}
	return nil
}
