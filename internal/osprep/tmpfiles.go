package osprep

import (
	"fmt"
	"strings"
)

// tmpfilesHeader opens cfs-deploy-os.conf.
const tmpfilesHeader = `# Written by cfs-deploy commit --prepare-os (see docs/os-trees.md).
# The image's root is read-only, so the writable top-level directories are
# links into /var and /run. Rollout seeds /var only once, so their targets
# are made here at every boot; those with a copy of what the distribution
# shipped under /usr/share/factory are seeded from it while empty.
`

// tmpfilesDBHeader explains the package database lines.
const tmpfilesDBHeader = `# The package database lives in /usr, so that it always describes the /usr
# of the deployment that booted; /var/lib holds only a link to it.
`

// tmpfilesConf writes cfs-deploy-os.conf from what the tree holds now, so
// that preparing a prepared tree writes the same file.
func (p *prep) tmpfilesConf() error {
	var b strings.Builder
	b.WriteString(tmpfilesHeader)
	for _, l := range varLinks {
		n := lookup(p.root, l.path)
		if n == nil || !n.Target().IsSymlink() || !sameLink(n.Target().Payload, l.target, l.dest) {
			continue
		}
		if f := lookup(p.root, l.factory()); f != nil && f.IsDir() {
			fmt.Fprintf(&b, "C %s - - - - /%s\n", l.dest, l.factory())
		} else {
			fmt.Fprintf(&b, "d %s %04o root root -\n", l.dest, l.mode)
		}
	}
	first := true
	for _, db := range pkgDBs {
		if n := lookup(p.root, db.usrPath); n == nil || !n.IsDir() {
			continue
		}
		if first {
			b.WriteString(tmpfilesDBHeader)
			first = false
		}
		fmt.Fprintf(&b, "L+ /%s - - - - %s\n", db.varPath, db.link())
	}
	return p.writeFile(TmpfilesConf, 0o644, []byte(b.String()))
}

// systemdTmpfiles comments out the lines of the distribution's
// tmpfiles.d files that create or adjust the paths that are now links
// (home.conf's "Q /home", provision.conf's "d- /root", ...):
// systemd-tmpfiles would log errors about the read-only root for them,
// or replace a link.
func (p *prep) systemdTmpfiles() error {
	dir := lookup(p.root, tmpfilesDir)
	if dir == nil || !dir.IsDir() {
		return nil
	}
	for _, c := range dir.Children {
		if c.Name == "cfs-deploy-os.conf" || !strings.HasSuffix(c.Name, ".conf") || !c.Target().IsRegular() {
			continue
		}
		data, err := p.readFile(c)
		if err != nil {
			return err
		}
		out, n := disableLinkedLines(string(data))
		if n == 0 {
			continue
		}
		if err := p.setContent(c, []byte(out)); err != nil {
			return err
		}
		p.changed("%s: %d lines commented out", c.Path(), n)
	}
	return nil
}

// linkedPaths are the paths that Prepare turns into links.
func linkedPaths() map[string]bool {
	m := map[string]bool{}
	for _, l := range varLinks {
		m["/"+l.path] = true
	}
	for _, db := range pkgDBs {
		m["/"+db.varPath] = true
	}
	return m
}

// disableLinkedLines comments out the tmpfiles.d lines whose path is one
// of linkedPaths and returns the new text and how many there were. Lines
// for paths below them (/root/.ssh) stay: they work through the link.
func disableLinkedLines(text string) (string, int) {
	linked := linkedPaths()
	var b strings.Builder
	n := 0
	for _, line := range splitLines(text) {
		f := strings.Fields(line)
		if len(f) >= 2 && !strings.HasPrefix(f[0], "#") {
			path := strings.Trim(f[1], `"'`)
			if path != "/" {
				path = strings.TrimRight(path, "/")
			}
			if linked[path] {
				fmt.Fprintf(&b, "# cfs-deploy --prepare-os: %s is a link: #%s", path, line)
				if !strings.HasSuffix(line, "\n") {
					b.WriteByte('\n')
				}
				n++
				continue
			}
		}
		b.WriteString(line)
	}
	return b.String(), n
}
