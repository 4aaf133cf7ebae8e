// Package mountinfo reads proc(5) mountinfo files: which file system is
// mounted where, from which device. It stays small enough for cfs-init.
package mountinfo

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// Entry is one mount.
type Entry struct {
	Major, Minor uint32 // device number of the file system
	MountPoint   string
	FSType       string
	Source       string
}

// Read returns the mounts listed in the mountinfo file at path (usually
// /proc/self/mountinfo), skipping lines it cannot parse.
func Read(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if e, ok := ParseLine(sc.Text()); ok {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// ParseLine reads one line:
// "id parent major:minor root mountpoint options [optional...] - fstype source superoptions".
func ParseLine(line string) (Entry, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	f, tail := strings.Fields(pre), strings.Fields(post)
	if !ok || len(f) < 6 || len(tail) < 2 {
		return Entry{}, false
	}
	ma, mi, ok := strings.Cut(f[2], ":")
	if !ok {
		return Entry{}, false
	}
	major, err1 := strconv.ParseUint(ma, 10, 32)
	minor, err2 := strconv.ParseUint(mi, 10, 32)
	if err1 != nil || err2 != nil {
		return Entry{}, false
	}
	return Entry{
		Major: uint32(major), Minor: uint32(minor),
		MountPoint: Unescape(f[4]),
		FSType:     tail[0],
		Source:     Unescape(tail[1]),
	}, true
}

// Unescape undoes the kernel's octal escapes (\040 for a space, \134 for a
// backslash, ...) in mountinfo fields.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
