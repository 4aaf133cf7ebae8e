package osprep

import (
	"bytes"
	"fmt"
	"strings"
)

// tmpfsLine mounts /tmp as ostree systems and Fedora do: a tmpfs, since
// the image's /tmp is read-only.
const tmpfsLine = "tmpfs /tmp tmpfs mode=1777,strictatime,nosuid,nodev 0 0"

const (
	tmpComment  = "# cfs-deploy --prepare-os: /tmp is a tmpfs (the image's root is read-only)"
	rootComment = "# cfs-deploy --prepare-os: / is the read-only composefs image cfs-init mounts;\n" +
		"# systemd-remount-fs fails on an entry for it:"
)

// fstab mounts a tmpfs on /tmp and comments out entries for /.
func (p *prep) fstab() error {
	n := lookup(p.root, fstabPath)
	var data []byte
	if n != nil {
		if !n.Target().IsRegular() {
			return fmt.Errorf("/%s is %s; want a regular file", fstabPath, kind(n))
		}
		var err error
		if data, err = p.readFile(n); err != nil {
			return err
		}
	}
	out, roots, tmpMounted := editFstab(data)
	for _, l := range roots {
		p.warn("/etc/fstab: commented out the entry for / (%q): the root is a read-only composefs image, and systemd-remount-fs would fail on it", l)
	}
	switch unit := p.tmpUnit(); {
	case tmpMounted:
	case unit == "masked":
		p.warn("/etc/systemd/system/tmp.mount masks the mount of /tmp: /tmp stays read-only")
	case unit == "":
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		out = append(out, tmpComment+"\n"+tmpfsLine+"\n"...)
		p.changed("/etc/fstab: /tmp is a tmpfs")
	}
	if err := p.mountDir("tmp", 0o1777, "a tmpfs"); err != nil {
		return err
	}
	if n == nil {
		return p.writeFile(fstabPath, 0o644, out)
	}
	if bytes.Equal(out, data) {
		return nil
	}
	if len(roots) > 0 {
		p.changed("/etc/fstab: entry for / commented out")
	}
	return p.setContent(n, out)
}

// tmpUnit says whether the tree's /etc enables its own tmp.mount
// ("enabled"), masks it ("masked") or neither ("").
func (p *prep) tmpUnit() string {
	if u := lookup(p.root, "etc/systemd/system/tmp.mount"); u != nil {
		if t := u.Target(); t.IsSymlink() && t.Payload == "/dev/null" {
			return "masked"
		}
		return "enabled"
	}
	if lookup(p.root, "etc/systemd/system/local-fs.target.wants/tmp.mount") != nil {
		return "enabled"
	}
	return ""
}

// editFstab comments out the entries that mount / and returns the new
// content, those entries, and whether an active entry mounts /tmp.
func editFstab(data []byte) (out []byte, roots []string, tmp bool) {
	var b strings.Builder
	for _, line := range splitLines(string(data)) {
		body := strings.TrimSuffix(line, "\n")
		switch mountPoint(body) {
		case "/":
			roots = append(roots, strings.TrimSpace(body))
			b.WriteString(rootComment + "\n#" + body + "\n")
			continue
		case "/tmp":
			tmp = true
		}
		b.WriteString(line)
	}
	return []byte(b.String()), roots, tmp
}

// mountPoint returns the mount point of an active fstab line, "" for a
// comment, a blank or a malformed line.
func mountPoint(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 || strings.HasPrefix(f[0], "#") {
		return ""
	}
	// fstab spells a space in a path \040; "/" and "/tmp" have none,
	// but "/tmp/" is /tmp too.
	if mp := strings.TrimRight(f[1], "/"); mp != "" {
		return mp
	}
	return "/"
}

// rootEntries returns fstab's active entries for /.
func rootEntries(data []byte) []string {
	var roots []string
	for _, line := range splitLines(string(data)) {
		if mountPoint(line) == "/" {
			roots = append(roots, strings.TrimSpace(line))
		}
	}
	return roots
}

// splitLines splits s after each newline; the last line may lack one.
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}
