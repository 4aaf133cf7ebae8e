package initboot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
)

// mountUnit is a systemd mount unit for a mount cfs-init made. From the
// mount table alone systemd treats every mount alike: it tries to unmount
// each at shutdown, the physical root and the image included, which the
// root is made of (a failure line at every shutdown), and nothing
// requires /var. The unit files say which mounts stay to the end (left to
// systemd-shutdown, which remounts them read-only) and make
// local-fs.target require var.mount, so that what needs /var (journal
// flushing) is ordered on it and stopped before it. A prepared tree's
// cfs-deploy-generator hands them to systemd.
type mountUnit struct {
	What, Where, Type, Options string
	Description                string
	// Stop: systemd's default dependencies, so the mount is unmounted at
	// shutdown after what uses it (and local-fs.target requires it).
	// Without, systemd leaves the mount alone and systemd-shutdown
	// remounts it read-only at the very end.
	Stop bool
}

// unitName is the systemd unit name of a mount point: the path without
// its outer slashes, "/" as "-", and every byte outside [A-Za-z0-9:_.]
// (and a leading ".") as \xNN, as systemd-escape --path does.
func unitName(where string) string {
	p := strings.Trim(filepath.Clean(where), "/")
	if p == "" {
		return "-.mount"
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c == '.' && i > 0,
			c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == ':', c == '_':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String() + ".mount"
}

func (u mountUnit) name() string { return unitName(u.Where) }

// unitValue protects a value from systemd's specifier expansion ("%").
func unitValue(v string) string { return strings.ReplaceAll(v, "%", "%%") }

func (u mountUnit) text() string {
	var b strings.Builder
	b.WriteString("# Written by cfs-init at boot: this mount is part of the composefs root.\n[Unit]\n")
	fmt.Fprintf(&b, "Description=%s\n", unitValue(u.Description))
	if !u.Stop {
		b.WriteString("DefaultDependencies=no\n")
	}
	fmt.Fprintf(&b, "\n[Mount]\nWhat=%s\nWhere=%s\n", unitValue(u.What), unitValue(u.Where))
	if u.Type != "" {
		fmt.Fprintf(&b, "Type=%s\n", u.Type)
	}
	if u.Options != "" {
		fmt.Fprintf(&b, "Options=%s\n", u.Options)
	}
	return b.String()
}

// rootMounts is where the mounts a booted root is made of are, as the
// booted system sees them.
type rootMounts struct {
	Device, FSType string // the physical root's
	Physical       string // the physical root: sysroot.PhysicalRootDir
	Image          string // the EROFS layer: sysroot.ImageMountDir
	SysrootBind    string // "/sysroot" when the image has one and the physical root is bound there
}

// bootUnits returns the units for a booted root. The physical root's
// needs its device: a unit without What= is refused, and what requires it
// (var.mount) with it; without one systemd knows the mount from the mount
// table only.
func bootUnits(m rootMounts, img *chosenImage, dep *deployment) []mountUnit {
	var us []mountUnit
	if m.Device != "" {
		us = append(us, mountUnit{What: m.Device, Where: m.Physical, Type: m.FSType,
			Description: "cfs-deploy physical root (holds the objects / is made of)"})
	}
	us = append(us, []mountUnit{
		{What: filepath.Join(m.Physical, img.Rel), Where: m.Image, Type: "erofs", Options: "ro",
			Description: "cfs-deploy composefs image " + img.Ref.Digest.String()},
		{What: filepath.Join(m.Physical, dep.Etc), Where: "/etc", Options: "bind",
			Description: "cfs-deploy /etc of this deployment"},
		{What: filepath.Join(m.Physical, dep.Var), Where: "/var", Options: "bind", Stop: true,
			Description: "cfs-deploy /var of stateroot " + dep.StateRoot},
	}...)
	if m.SysrootBind != "" {
		us = append(us, mountUnit{What: m.Physical, Where: m.SysrootBind, Options: "bind",
			Description: "cfs-deploy physical root"})
	}
	return us
}

// writeUnits writes the units into run's cfs-deploy/systemd, replacing
// what an earlier boot stage left there. Units that are stopped at
// shutdown are required by local-fs.target, as fstab's are.
func writeUnits(run string, units []mountUnit) (err error) {
	dir := underRun(run, sysroot.UnitsDir)
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	req := filepath.Join(tmp, "local-fs.target.requires")
	if err := os.MkdirAll(req, 0o755); err != nil {
		return err
	}
	for _, u := range units {
		if err := os.WriteFile(filepath.Join(tmp, u.name()), []byte(u.text()), 0o644); err != nil {
			return err
		}
		if u.Stop {
			if err := os.Symlink("../"+u.name(), filepath.Join(req, u.name())); err != nil {
				return err
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}
