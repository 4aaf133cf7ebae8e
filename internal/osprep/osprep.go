// Package osprep turns a stock distribution tree (Debian, Fedora, ... with
// systemd) into one that runs from a read-only composefs image deployed
// by cfs-deploy, the way `commit --prepare-os` commits it. It works on the
// in-memory tree a commit builds, never on the source, and is idempotent:
// a prepared tree comes out unchanged. docs/os-trees.md describes the
// layout it produces; Check tells whether a tree has it.
//
// What Prepare does:
//   - /dev, /proc, /sys, /run and /sysroot exist as mount points: the
//     image is read-only, cfs-init moves /run (which carries the
//     physical root) into the new root, refusing a tree without it, and
//     binds the physical root on /sysroot, where cfs-deploy looks for
//     the repository by default;
//   - the writable top-level directories (/home, /root, /srv, /opt, /mnt,
//     /usr/local, /media) become links into /var (or /run), their content
//     kept under /usr/share/factory/<target> to seed the target;
//   - /usr/lib/tmpfiles.d/cfs-deploy-os.conf creates those targets at
//     every boot, since rollout seeds /var only once, and provides
//     /var/lib/dpkg and /var/lib/rpm as links to databases moved to
//     /usr/lib/sysimage, so that they always describe the /usr they
//     come with;
//   - lines of usr/lib/tmpfiles.d that would create the linked paths
//     are commented out;
//   - /etc/fstab mounts a tmpfs on /tmp, and an entry for / is commented
//     out (systemd-remount-fs fails on the read-only root);
//   - the systemd generator cfs-deploy-generator is installed, and a
//     marker file records that the tree was prepared.
package osprep

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Reader reads the content of regular files of a tree.
type Reader interface {
	// ReadContent returns the content of regular file n, failing if it
	// is larger than limit bytes.
	ReadContent(n *erofs.Node, limit int64) ([]byte, error)
}

// Files reads the content of a tree's files and stores new content; a
// repository is one (repo.Repo).
type Files interface {
	Reader
	// PutBytes stores data as an object and returns its fs-verity digest.
	PutBytes(data []byte) (verity.Digest, error)
}

// Paths inside the tree that Prepare writes, without the leading slash.
const (
	TmpfilesConf  = "usr/lib/tmpfiles.d/cfs-deploy-os.conf"
	GeneratorPath = "usr/lib/systemd/system-generators/cfs-deploy-generator"
	MarkerPath    = "usr/lib/cfs-deploy/prepared"
	FactoryDir    = "usr/share/factory"
	tmpfilesDir   = "usr/lib/tmpfiles.d"
	fstabPath     = "etc/fstab"
)

// markerContent names the layout version, so that a later cfs-deploy can
// tell an older preparation from its own.
const markerContent = "cfs-deploy prepare-os 1\n"

// maxConfig bounds the configuration files Prepare reads (fstab,
// tmpfiles.d): they are a few kilobytes.
const maxConfig = 1 << 20

// varLink is one directory that becomes a link.
type varLink struct {
	path   string // in the tree: "home", "usr/local"
	target string // what the link says: "var/home", "../var/usrlocal"
	dest   string // where it leads at run time: "/var/home"
	mode   uint32 // of the directory tmpfiles creates when there is no factory copy
}

// varLinks is the ostree layout: state under /var, /media under /run.
var varLinks = []varLink{
	{"home", "var/home", "/var/home", 0o755},
	{"root", "var/roothome", "/var/roothome", 0o700},
	{"srv", "var/srv", "/var/srv", 0o755},
	{"opt", "var/opt", "/var/opt", 0o755},
	{"mnt", "var/mnt", "/var/mnt", 0o755},
	{"usr/local", "../var/usrlocal", "/var/usrlocal", 0o755},
	{"media", "run/media", "/run/media", 0o755},
}

// factory is where the content of l's directory is kept.
func (l varLink) factory() string { return FactoryDir + l.dest }

// pkgDB is a package database that moves from /var to /usr.
type pkgDB struct {
	varPath string // "var/lib/dpkg"
	usrPath string // "usr/lib/sysimage/dpkg"
}

// link is what /var/lib/<db> says: relative, so it also resolves inside a
// mounted image.
func (d pkgDB) link() string { return "../../" + d.usrPath }

var pkgDBs = []pkgDB{
	{"var/lib/dpkg", "usr/lib/sysimage/dpkg"},
	{"var/lib/rpm", "usr/lib/sysimage/rpm"},
}

// Report says what Prepare did.
type Report struct {
	// Changes lists what was changed, one line each, in order.
	Changes []string
	// Warnings are things the caller should tell the user: the tree was
	// prepared, but not everything is as it should be.
	Warnings []string
}

// ErrNotOS refuses a tree that cannot be an operating system.
var ErrNotOS = errors.New("not an operating system tree")

// Prepare transforms the tree at root in place (see the package comment).
// New and changed file content larger than erofs.RecommendedInlineMax is
// stored through files. Errors name the path and the problem; on an error
// the tree may be half prepared and must not be committed.
func Prepare(root *erofs.Node, files Files) (*Report, error) {
	if root == nil || !root.IsDir() {
		return nil, fmt.Errorf("prepare: root: %w", erofs.ErrNotDirectory)
	}
	usr := root.Lookup("usr")
	if usr == nil || !usr.IsDir() {
		return nil, fmt.Errorf("prepare: /usr is missing or not a directory: %w", ErrNotOS)
	}
	p := &prep{root: root, files: files, stamp: usr.Mtime, rep: &Report{}}
	steps := []func() error{p.mountDirs, p.links, p.pkgDBs, p.systemdTmpfiles, p.fstab, p.tmpfilesConf, p.generator, p.marker}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
	}
	return p.rep, nil
}

// prep is one run of Prepare.
type prep struct {
	root  *erofs.Node
	files Files
	// stamp is the mtime of new entries: the one of /usr, which Prepare
	// never changes, so that preparing the same tree twice gives the same
	// image.
	stamp erofs.Timespec
	rep   *Report
}

func (p *prep) changed(format string, args ...any) {
	p.rep.Changes = append(p.rep.Changes, fmt.Sprintf(format, args...))
}

func (p *prep) warn(format string, args ...any) {
	p.rep.Warnings = append(p.rep.Warnings, fmt.Sprintf(format, args...))
}

// links makes the writable top-level directories links into /var.
func (p *prep) links() error {
	for _, l := range varLinks {
		if err := p.link(l); err != nil {
			return err
		}
	}
	return nil
}

func (p *prep) link(l varLink) error {
	parentPath, name := splitPath(l.path)
	parent, err := p.mkdirAll(parentPath)
	if err != nil {
		return err
	}
	n := parent.Lookup(name)
	switch {
	case n == nil:
		if err := p.addSymlink(parent, name, l.target, p.stamp); err != nil {
			return err
		}
		p.changed("/%s: new link to %s", l.path, l.target)
		return nil
	case n.Target().IsSymlink():
		if !sameLink(n.Target().Payload, l.target, l.dest) {
			p.warn("/%s is a link to %s, not to %s: left as it is, and not created at boot", l.path, n.Target().Payload, l.target)
		}
		return nil
	case !n.IsDir():
		return fmt.Errorf("/%s is %s; want a directory (moved to /usr/share/factory) or a link to %s", l.path, kind(n), l.target)
	}
	if len(n.Children) > 0 {
		if err := p.moveTo(n, l.factory()); err != nil {
			return fmt.Errorf("/%s: %w", l.path, err)
		}
		p.changed("/%s: content moved to /%s", l.path, l.factory())
	} else {
		parent.RemoveChild(name)
	}
	if err := p.addSymlink(parent, name, l.target, n.Mtime); err != nil {
		return err
	}
	p.changed("/%s: now a link to %s", l.path, l.target)
	return nil
}

// sameLink reports whether a link target is the expected relative one or
// the absolute path it stands for.
func sameLink(have, want, dest string) bool {
	return have == want || strings.TrimRight(have, "/") == dest
}

// pkgDBs moves package databases from /var/lib to /usr/lib/sysimage.
func (p *prep) pkgDBs() error {
	for _, db := range pkgDBs {
		if err := p.pkgDB(db); err != nil {
			return err
		}
	}
	return nil
}

func (p *prep) pkgDB(db pkgDB) error {
	n := lookup(p.root, db.varPath)
	switch {
	case n == nil:
		// No database, or one that lives in /usr already (Fedora links
		// /var/lib/rpm itself); the tmpfiles line provides the link.
		return nil
	case n.Target().IsSymlink():
		if t := n.Target().Payload; t != db.link() && t != "/"+db.usrPath {
			p.warn("/%s is a link to %s, not to %s: the package database may not match /usr", db.varPath, t, db.link())
		}
		return nil
	case !n.IsDir():
		return fmt.Errorf("/%s is %s; want the package database directory", db.varPath, kind(n))
	}
	if lookup(p.root, db.usrPath) != nil {
		return fmt.Errorf("/%s is a directory and /%s exists too: remove one of them from the tree", db.varPath, db.usrPath)
	}
	parent := n.Parent
	if err := p.moveTo(n, db.usrPath); err != nil {
		return fmt.Errorf("/%s: %w", db.varPath, err)
	}
	if err := p.addSymlink(parent, n.Name, db.link(), n.Mtime); err != nil {
		return err
	}
	p.changed("/%s: moved to /%s, left a link", db.varPath, db.usrPath)
	return nil
}

// apiDirs are the mount points of the kernel's file systems, /run and
// /sysroot,
// with the modes distributions give them. Container images may lack
// them (the container runtime makes them); a read-only image cannot get
// them at boot, and cfs-init needs /run.
var apiDirs = []struct {
	name string
	mode uint32
	what string
}{
	{"dev", 0o755, "devtmpfs"},
	{"proc", 0o555, "procfs"},
	{"sys", 0o555, "sysfs"},
	{"run", 0o755, "the /run cfs-init carries the physical root on"},
	// cfs-init binds the physical root here where the image has the
	// directory, as ostree systems have it: the repository is then at
	// the default /sysroot/composefs on the booted system.
	{"sysroot", 0o755, "the physical root"},
}

// mountDirs makes sure the tree has the mount points of apiDirs.
func (p *prep) mountDirs() error {
	for _, d := range apiDirs {
		if err := p.mountDir(d.name, d.mode, d.what); err != nil {
			return err
		}
	}
	return nil
}

// mountDir makes the top-level directory name (mode) a mount point for
// what, if the tree lacks it; something else there is an error.
func (p *prep) mountDir(name string, mode uint32, what string) error {
	n := lookup(p.root, name)
	if n == nil {
		d := erofs.NewDirectory(name, mode)
		d.Mtime = p.stamp
		if err := p.root.AddChild(d); err != nil {
			return fmt.Errorf("create /%s: %w", name, err)
		}
		p.changed("/%s: created as a mount point", name)
		return nil
	}
	if !n.IsDir() {
		return fmt.Errorf("/%s is %s; want a directory to mount %s on", name, kind(n), what)
	}
	return nil
}

// marker records that the tree is prepared.
func (p *prep) marker() error {
	return p.writeFile(MarkerPath, 0o644, []byte(markerContent))
}

func kind(n *erofs.Node) string {
	switch n.Target().Type() {
	case erofs.ModeDir:
		return "a directory"
	case erofs.ModeReg:
		return "a regular file"
	case erofs.ModeSymlink:
		return "a symbolic link"
	case erofs.ModeChr, erofs.ModeBlk:
		return "a device"
	default:
		return "a special file"
	}
}
