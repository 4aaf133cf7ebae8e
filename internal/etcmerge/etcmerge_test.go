package etcmerge

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"golang.org/x/sys/unix"
)

// mergeCase is one scenario: the old image is oldImage, the new one
// newImage with newImg's edits, the local /etc the old image with local's
// edits. The merged /etc must be the new image with want's edits.
type mergeCase struct {
	name      string
	newImg    func(tr tree)
	local     func(tr tree)
	changes   []string // what Diff reports, as Change.String
	want      func(tr tree)
	conflicts []string
	skipped   []string
	check     func(t *testing.T, local, dest string)
}

// outsideTree is what lies outside /etc, where symlinks in the cases
// point: its content must never show up in the merged /etc.
func outsideTree(t *testing.T) string {
	top := t.TempDir()
	write(t, top, tree{
		"":          dir(0o755),
		"secret":    file("top secret\n", 0o600),
		"conf":      dir(0o700),
		"conf/job":  file("outside job\n", 0o600),
		"conf/keep": file("must survive\n", 0o600),
	})
	return top
}

func mergeCases(outside string) []mergeCase {
	secret := filepath.Join(outside, "secret")
	outsideDir := filepath.Join(outside, "conf")
	checkOutside := func(t *testing.T, _, _ string) {
		for _, p := range []string{"conf/job", "conf/keep", "secret"} {
			if _, err := os.Lstat(filepath.Join(outside, p)); err != nil {
				t.Errorf("outside the tree: %v", err)
			}
		}
	}
	return []mergeCase{
		{name: "unchanged"},
		{
			name:   "untouched file the new image changed, mtime touched locally",
			newImg: func(tr tree) { tr["hostname"] = file("new-host\n", 0o644).fresh() },
			local:  func(tr tree) { tr.mod("hostname", ent.local) },
		},
		{
			name:   "modified file, same size",
			newImg: func(tr tree) { tr["hostname"] = file("new-host\n", 0o644).fresh() },
			local: func(tr tree) {
				tr["hostname"] = file("loc-host\n", 0o644).local()
				// Same size as the image's, one byte differs: only the
				// digest tells.
				tr.mod("ssh/sshd_config", func(e ent) ent {
					e.data = strings.Replace(e.data, "no", "NO", 1)
					return e.local()
				})
				tr["ssh-extra"] = file("x\n", 0o644).local()
			},
			// Byte order: "ssh-extra" sorts before "ssh/...".
			changes: []string{"M hostname (content)", "A ssh-extra", "M ssh/sshd_config (content)"},
			want: func(tr tree) {
				tr["hostname"] = file("loc-host\n", 0o644).local()
				tr["ssh/sshd_config"] = oldImage()["ssh/sshd_config"]
				tr.mod("ssh/sshd_config", func(e ent) ent {
					e.data = strings.Replace(e.data, "no", "NO", 1)
					return e.local()
				})
				tr["ssh-extra"] = file("x\n", 0o644).local()
			},
		},
		{
			name:    "modified large file",
			local:   func(tr tree) { tr.mod("ssh/moduli", func(e ent) ent { e.data += "more\n"; return e.local() }) },
			changes: []string{"M ssh/moduli (content)"},
			want:    func(tr tree) { tr.mod("ssh/moduli", func(e ent) ent { e.data += "more\n"; return e.local() }) },
		},
		{
			name:    "modified hard link name",
			local:   func(tr tree) { tr["shells.link"] = file("/bin/zsh\n", 0o644).local() },
			changes: []string{"M shells.link (content)"},
			want:    func(tr tree) { tr["shells.link"] = file("/bin/zsh\n", 0o644).local() },
		},
		{
			name:    "added file",
			local:   func(tr tree) { tr["new.conf"] = file("mine\n", 0o4755).owner(7, 8).local() },
			changes: []string{"A new.conf"},
			want:    func(tr tree) { tr["new.conf"] = file("mine\n", 0o4755).owner(7, 8).local() },
		},
		{
			name: "added nested directory",
			local: func(tr tree) {
				tr["app"] = dir(0o750).owner(5, 6).xattr("user.app", "1").local()
				tr["app/conf.d"] = dir(0o700).local()
				tr["app/conf.d/a.conf"] = file("a\n", 0o600).local()
				tr["app/b.conf"] = file("b\n", 0o640).owner(5, 6).local()
			},
			changes: []string{"A app"},
			want: func(tr tree) {
				tr["app"] = dir(0o750).owner(5, 6).xattr("user.app", "1")
				tr["app/conf.d"] = dir(0o700)
				tr["app/conf.d/a.conf"] = file("a\n", 0o600).local()
				tr["app/b.conf"] = file("b\n", 0o640).owner(5, 6).local()
			},
			check: func(t *testing.T, local, dest string) {
				for _, p := range []string{"app", "app/conf.d"} {
					if got, want := mtime(t, filepath.Join(dest, p)), mtime(t, filepath.Join(local, p)); got != want {
						t.Errorf("%s: mtime %v, want the local %v", p, got, want)
					}
				}
			},
		},
		{
			name:   "added directory the new image adds too",
			newImg: func(tr tree) { tr["app"] = dir(0o755).fresh(); tr["app/x.conf"] = file("x\n", 0o644).fresh() },
			local: func(tr tree) {
				tr["app"] = dir(0o700).xattr("user.local", "1").local()
				tr["app/b.conf"] = file("b\n", 0o600).local()
			},
			changes: []string{"A app"},
			want: func(tr tree) {
				tr["app"] = dir(0o700).xattr("user.local", "1")
				tr["app/b.conf"] = file("b\n", 0o600).local()
			},
		},
		{
			name:    "deleted file",
			newImg:  func(tr tree) { tr["passwd"] = file("root:x:0:0::/root:/bin/bash\n", 0o644).fresh() },
			local:   func(tr tree) { tr.del("passwd") },
			changes: []string{"D passwd"},
			want:    func(tr tree) { tr.del("passwd") },
		},
		{
			name:    "deleted directory",
			newImg:  func(tr tree) { tr["cron.d/newjob"] = file("new\n", 0o644).fresh() },
			local:   func(tr tree) { tr.del("cron.d") },
			changes: []string{"D cron.d"},
			want:    func(tr tree) { tr.del("cron.d") },
		},
		{
			name:    "deleted file below a directory the new image made a symlink",
			newImg:  func(tr tree) { tr.del("cron.d"); tr["cron.d"] = symlink(outsideDir) },
			local:   func(tr tree) { tr.del("cron.d/job") },
			changes: []string{"D cron.d/job"},
			check:   checkOutside,
		},
		{
			name:   "file new in the new image",
			newImg: func(tr tree) { tr["default/keyboard"] = file("XKBLAYOUT=us\n", 0o644).fresh() },
		},
		{
			name:      "type file->dir",
			local:     func(tr tree) { tr["hostname"] = dir(0o700).local(); tr["hostname/x"] = file("x\n", 0o600).local() },
			changes:   []string{"M hostname (type file->dir)"},
			want:      func(tr tree) { tr["hostname"] = dir(0o700); tr["hostname/x"] = file("x\n", 0o600).local() },
			conflicts: []string{"hostname"},
		},
		{
			name:      "type dir->file",
			local:     func(tr tree) { tr.del("default"); tr["default"] = file("flat\n", 0o644).local() },
			changes:   []string{"M default (type dir->file)"},
			want:      func(tr tree) { tr.del("default"); tr["default"] = file("flat\n", 0o644).local() },
			conflicts: []string{"default"},
		},
		{
			// The symlink leads outside: the merge must copy the link,
			// not the directory it points to.
			name:      "type dir->symlink",
			local:     func(tr tree) { tr.del("ssh"); tr["ssh"] = symlink(outsideDir).local() },
			changes:   []string{"M ssh (type dir->symlink)"},
			want:      func(tr tree) { tr.del("ssh"); tr["ssh"] = symlink(outsideDir).local() },
			conflicts: []string{"ssh"},
			check:     checkOutside,
		},
		{
			name:      "type symlink->dir",
			local:     func(tr tree) { tr["os-release"] = dir(0o755).local(); tr["os-release/x"] = file("x\n", 0o644).local() },
			changes:   []string{"M os-release (type symlink->dir)"},
			want:      func(tr tree) { tr["os-release"] = dir(0o755); tr["os-release/x"] = file("x\n", 0o644).local() },
			conflicts: []string{"os-release"},
		},
		{
			name:      "type symlink->file",
			local:     func(tr tree) { tr["localtime"] = file("TZif\n", 0o644).local() },
			changes:   []string{"M localtime (type symlink->file)"},
			want:      func(tr tree) { tr["localtime"] = file("TZif\n", 0o644).local() },
			conflicts: []string{"localtime"},
		},
		{
			name:      "type file->symlink pointing outside",
			local:     func(tr tree) { tr["passwd"] = symlink(secret).local() },
			changes:   []string{"M passwd (type file->symlink)"},
			want:      func(tr tree) { tr["passwd"] = symlink(secret).local() },
			conflicts: []string{"passwd"},
		},
		{
			name: "modified file the new image made a directory",
			newImg: func(tr tree) {
				tr["default/grub"] = dir(0o755).fresh()
				tr["default/grub/x.cfg"] = file("x\n", 0o644).fresh()
			},
			local:   func(tr tree) { tr["default/grub"] = file("GRUB_TIMEOUT=1\n", 0o644).local() },
			changes: []string{"M default/grub (content)"},
			want: func(tr tree) {
				tr.del("default/grub")
				tr["default/grub"] = file("GRUB_TIMEOUT=1\n", 0o644).local()
			},
			conflicts: []string{"default/grub"},
		},
		{
			// dest has a symlink where the local /etc has a directory:
			// writing through it would write outside.
			name:    "modified file below a directory the new image made a symlink",
			newImg:  func(tr tree) { tr.del("cron.d"); tr["cron.d"] = symlink(outsideDir) },
			local:   func(tr tree) { tr["cron.d/job"] = file("mine\n", 0o644).local() },
			changes: []string{"M cron.d/job (content)"},
			want: func(tr tree) {
				tr["cron.d"] = dir(0o755)
				tr["cron.d/job"] = file("mine\n", 0o644).local()
			},
			conflicts: []string{"cron.d"},
			check: func(t *testing.T, local, dest string) {
				checkOutside(t, local, dest)
				if b, _ := os.ReadFile(filepath.Join(outsideDir, "job")); string(b) != "outside job\n" {
					t.Errorf("the merge wrote through a symlink: outside job is %q", b)
				}
			},
		},
		{
			name:    "permissions only",
			newImg:  func(tr tree) { tr["shadow"] = file("root:!:19500:0:99999:7:::\n", 0o640).owner(0, 42).fresh() },
			local:   func(tr tree) { tr.mod("shadow", func(e ent) ent { e.perm = 0o600; return e }) },
			changes: []string{"M shadow (mode)"},
			// The whole local file wins, not just its mode.
			want: func(tr tree) {
				tr["shadow"] = oldImage()["shadow"]
				tr.mod("shadow", func(e ent) ent { e.perm = 0o600; return e })
			},
		},
		{
			name:    "setuid bits survive the chown",
			local:   func(tr tree) { tr.mod("passwd", func(e ent) ent { e.perm = 0o6755; return e.owner(3, 4) }) },
			changes: []string{"M passwd (mode, owner)"},
			want:    func(tr tree) { tr.mod("passwd", func(e ent) ent { e.perm = 0o6755; return e.owner(3, 4) }) },
		},
		{
			name:    "owner only",
			local:   func(tr tree) { tr.mod("sudoers", func(e ent) ent { return e.owner(0, 1) }) },
			changes: []string{"M sudoers (owner)"},
			want:    func(tr tree) { tr.mod("sudoers", func(e ent) ent { return e.owner(0, 1) }) },
		},
		{
			name:    "xattr only",
			local:   func(tr tree) { tr.mod("passwd", func(e ent) ent { return e.xattr("user.label", "x") }) },
			changes: []string{"M passwd (xattrs)"},
			want:    func(tr tree) { tr.mod("passwd", func(e ent) ent { return e.xattr("user.label", "x") }) },
		},
		{
			name:    "xattr removed",
			local:   func(tr tree) { tr.mod("sudoers", func(e ent) ent { e.xattrs = nil; return e }) },
			changes: []string{"M sudoers (xattrs)"},
			want:    func(tr tree) { tr.mod("sudoers", func(e ent) ent { e.xattrs = nil; return e }) },
		},
		{
			// overlayfs's own xattrs are neither compared nor copied.
			name:  "trusted.overlay xattr ignored",
			local: func(tr tree) { tr.mod("passwd", func(e ent) ent { return e.xattr("trusted.overlay.opaque", "y") }) },
		},
		{
			name:    "symlink target",
			local:   func(tr tree) { tr["os-release"] = symlink("../usr/lib/os-release.d/x").owner(1, 1).local() },
			changes: []string{"M os-release (target, owner)"},
			want:    func(tr tree) { tr["os-release"] = symlink("../usr/lib/os-release.d/x").owner(1, 1).local() },
		},
		{
			name:    "dangling symlink",
			local:   func(tr tree) { tr["dangling"] = symlink("/nonexistent/x").local() },
			changes: []string{"A dangling"},
			want:    func(tr tree) { tr["dangling"] = symlink("/nonexistent/x").local() },
		},
		{
			name:    "symlink pointing outside",
			local:   func(tr tree) { tr["foo"] = symlink(secret).local(); tr["bar"] = symlink(outsideDir).local() },
			changes: []string{"A bar", "A foo"},
			want:    func(tr tree) { tr["foo"] = symlink(secret).local(); tr["bar"] = symlink(outsideDir).local() },
			check:   checkOutside,
		},
		{
			name:   "local file inside a directory the new image removed",
			newImg: func(tr tree) { tr.del("default") },
			local: func(tr tree) {
				tr.mod("default", func(e ent) ent { e.uid = 9; return e })
				tr["default/locale"] = file("LANG=de_DE.UTF-8\n", 0o644).local()
				tr["default/extra"] = file("extra\n", 0o600).local()
			},
			changes: []string{"M default (owner)", "A default/extra", "M default/locale (content)"},
			// Only what changed locally: default/grub went with the image.
			want: func(tr tree) {
				tr["default"] = dir(0o755).owner(9, 0)
				tr["default/locale"] = file("LANG=de_DE.UTF-8\n", 0o644).local()
				tr["default/extra"] = file("extra\n", 0o600).local()
			},
		},
		{
			name:    "local file inside a directory the new image removed, parent unchanged",
			newImg:  func(tr tree) { tr.del("systemd") },
			local:   func(tr tree) { tr["systemd/system/b.svc"] = symlink("/dev/null").local() },
			changes: []string{"A systemd/system/b.svc"},
			want: func(tr tree) {
				tr["systemd"] = dir(0o755)
				tr["systemd/system"] = dir(0o755)
				tr["systemd/system/b.svc"] = symlink("/dev/null").local()
			},
		},
		{
			name:    "directory metadata",
			newImg:  func(tr tree) { tr["ssh/new_key"] = file("new\n", 0o600).fresh() },
			local:   func(tr tree) { tr.mod("ssh", func(e ent) ent { e.perm = 0o700; return e.xattr("user.dir", "mine") }) },
			changes: []string{"M ssh (mode, xattrs)"},
			want:    func(tr tree) { tr.mod("ssh", func(e ent) ent { e.perm = 0o700; return e.xattr("user.dir", "mine") }) },
		},
		{
			name:    "directory lost an xattr the new image keeps",
			local:   func(tr tree) { tr.mod("ssh", func(e ent) ent { e.xattrs = nil; return e }) },
			changes: []string{"M ssh (xattrs)"},
			want:    func(tr tree) { tr.mod("ssh", func(e ent) ent { e.xattrs = nil; return e }) },
		},
		{
			name:    "/etc itself",
			local:   func(tr tree) { tr.mod("", func(e ent) ent { e.perm = 0o750; return e }) },
			changes: []string{"M . (mode)"},
			want:    func(tr tree) { tr.mod("", func(e ent) ent { e.perm = 0o750; return e }) },
		},
		{
			name: "fifo and device nodes",
			local: func(tr tree) {
				tr.mod("initctl", func(e ent) ent { e.perm = 0o620; return e })
				tr["myfifo"] = ent{typ: erofs.ModeFifo, perm: 0o640, mtime: tLocal}
				tr["null"] = ent{typ: erofs.ModeChr, perm: 0o666, rdev: unix.Mkdev(1, 3), mtime: tLocal}
				tr["loop"] = ent{typ: erofs.ModeBlk, perm: 0o660, rdev: unix.Mkdev(7, 0), mtime: tLocal}
			},
			changes: []string{"M initctl (mode)", "A loop", "A myfifo", "A null"},
			want: func(tr tree) {
				tr.mod("initctl", func(e ent) ent { e.perm = 0o620; return e })
				tr["myfifo"] = ent{typ: erofs.ModeFifo, perm: 0o640, mtime: tLocal}
				tr["null"] = ent{typ: erofs.ModeChr, perm: 0o666, rdev: unix.Mkdev(1, 3), mtime: tLocal}
				tr["loop"] = ent{typ: erofs.ModeBlk, perm: 0o660, rdev: unix.Mkdev(7, 0), mtime: tLocal}
			},
		},
		{
			name:    "device number",
			local:   func(tr tree) { tr.mod("console", func(e ent) ent { e.rdev = unix.Mkdev(4, 1); return e }) },
			changes: []string{"M console (device)"},
			want:    func(tr tree) { tr.mod("console", func(e ent) ent { e.rdev = unix.Mkdev(4, 1); return e }) },
		},
		{
			name: "socket skipped",
			local: func(tr tree) {
				tr["control"] = ent{typ: erofs.ModeSock, perm: 0o600, mtime: tLocal}
				tr["app"] = dir(0o755).local()
				tr["app/sock"] = ent{typ: erofs.ModeSock, perm: 0o600, mtime: tLocal}
			},
			changes: []string{"A app", "A control"},
			want:    func(tr tree) { tr["app"] = dir(0o755) },
			skipped: []string{"app/sock", "control"},
		},
	}
}

func mtime(t *testing.T, p string) erofs.Timespec {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return erofs.Timespec{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}
}

// setup writes the local /etc and the new image's checkout of a case and
// returns them with the base.
func (c *mergeCase) setup(t *testing.T, noDigest bool) (b Base, local, dest string, newTree tree) {
	t.Helper()
	top := t.TempDir()
	local, dest = filepath.Join(top, "local"), filepath.Join(top, "dest")
	localTree, newTree := oldImage(), newImage()
	if c.local != nil {
		c.local(localTree)
	}
	if c.newImg != nil {
		c.newImg(newTree)
	}
	write(t, local, localTree)
	write(t, dest, newTree)
	return base(t, oldImage(), noDigest), local, dest, newTree
}

func changeStrings(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}

func notePaths(ns []Note) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Path)
	}
	return out
}

func TestDiff(t *testing.T) {
	needRoot(t)
	outside := outsideTree(t)
	for _, noDigest := range []bool{false, true} {
		for _, c := range mergeCases(outside) {
			name := c.name
			if noDigest {
				// Contents compared through Base.Open.
				name += " (no digests)"
			}
			t.Run(name, func(t *testing.T) {
				b, local, _, _ := c.setup(t, noDigest)
				got, err := Diff(b, local)
				if err != nil {
					t.Fatal(err)
				}
				if gs := changeStrings(got); !slices.Equal(gs, c.changes) {
					t.Errorf("Diff:\n  got  %q\n  want %q", gs, c.changes)
				}
				for _, ch := range got {
					if ch.TypeChanged != strings.HasPrefix(ch.What, "type ") {
						t.Errorf("%v: TypeChanged %v", ch, ch.TypeChanged)
					}
				}
			})
		}
	}
}

func TestMerge(t *testing.T) {
	needRoot(t)
	outside := outsideTree(t)
	for _, c := range mergeCases(outside) {
		t.Run(c.name, func(t *testing.T) {
			b, local, dest, newTree := c.setup(t, false)
			before := read(t, local)
			res, err := Merge(b, local, dest)
			if err != nil {
				t.Fatal(err)
			}
			var wantChanges []string
			for _, ch := range c.changes {
				if !slices.ContainsFunc(c.skipped, func(p string) bool { return ch == "A "+p }) {
					wantChanges = append(wantChanges, ch)
				}
			}
			if gs := changeStrings(res.Changes); !slices.Equal(gs, wantChanges) {
				t.Errorf("changes:\n  got  %q\n  want %q", gs, wantChanges)
			}
			if got := notePaths(res.Conflicts); !slices.Equal(got, c.conflicts) {
				t.Errorf("conflicts %q (%v), want %q", got, res.Conflicts, c.conflicts)
			}
			if got := notePaths(res.Skipped); !slices.Equal(got, c.skipped) {
				t.Errorf("skipped %q, want %q", got, c.skipped)
			}
			if len(res.Vanished) > 0 {
				t.Errorf("vanished %q", res.Vanished)
			}
			want := newTree.clone()
			if c.want != nil {
				c.want(want)
			}
			if d := diffTrees(read(t, dest), expected(want)); d != "" {
				t.Errorf("merged /etc differs:\n%s", d)
			}
			if d := diffTrees(read(t, local), before); d != "" {
				t.Errorf("the merge changed the local /etc:\n%s", d)
			}
			if c.check != nil {
				c.check(t, local, dest)
			}
		})
	}
}

// TestVanished removes local files at the moments the merge reads them.
func TestVanished(t *testing.T) {
	needRoot(t)
	type vcase struct {
		name     string
		local    func(tr tree)
		point    hookPoint
		path     string   // the hook acts when it runs for path
		remove   string   // what it removes; path if empty
		changes  []string // Merge's
		vanished []string
		want     func(tr tree)
	}
	cases := []vcase{
		{
			name: "unmodified file, between listing and lstat", point: hookStat, path: "hostname",
			changes: []string{"D hostname (vanished)"}, vanished: []string{"hostname"},
			want: func(tr tree) { delete(tr, "hostname") },
		},
		{
			name: "directory, between listing and lstat", point: hookStat, path: "ssh",
			changes: []string{"D ssh (vanished)"}, vanished: []string{"ssh"},
			want: func(tr tree) { tr.del("ssh") },
		},
		{
			name:  "added file, before the copy",
			local: func(tr tree) { tr["new.conf"] = file("mine\n", 0o644).local() }, point: hookCopy, path: "new.conf",
			changes: []string{"D new.conf (vanished)"}, vanished: []string{"new.conf"},
		},
		{
			name: "modified file, before the copy",
			local: func(tr tree) {
				tr["hostname"] = file("local\n", 0o644).local()
			},
			point: hookCopy, path: "hostname",
			changes: []string{"D hostname (vanished)"}, vanished: []string{"hostname"},
			want: func(tr tree) { delete(tr, "hostname") },
		},
		{
			name: "file inside an added directory, before the copy",
			local: func(tr tree) {
				tr["app"] = dir(0o755).local()
				tr["app/a"] = file("a\n", 0o644).local()
				tr["app/b"] = file("b\n", 0o644).local()
			},
			point: hookCopy, path: "app/a",
			changes: []string{"A app"}, vanished: []string{"app/a"},
			want: func(tr tree) { tr["app"] = dir(0o755); tr["app/b"] = file("b\n", 0o644).local() },
		},
		{
			name: "directory of a modified file, before the copy",
			local: func(tr tree) {
				tr["default/locale"] = file("LANG=de\n", 0o644).local()
			},
			point: hookCopy, path: "default/locale", remove: "default",
			changes: []string{"D default/locale (vanished)"}, vanished: []string{"default/locale"},
			want: func(tr tree) { delete(tr, "default/locale") },
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mc := mergeCase{local: c.local}
			b, local, dest, newTree := mc.setup(t, false)
			testHook = func(p hookPoint, rel string) {
				if p == c.point && rel == c.path {
					if c.remove != "" {
						rel = c.remove
					}
					if err := os.RemoveAll(filepath.Join(local, rel)); err != nil {
						t.Error(err)
					}
				}
			}
			defer func() { testHook = nil }()
			res, err := Merge(b, local, dest)
			if err != nil {
				t.Fatal(err)
			}
			if gs := changeStrings(res.Changes); !slices.Equal(gs, c.changes) {
				t.Errorf("changes:\n  got  %q\n  want %q", gs, c.changes)
			}
			if !slices.Equal(res.Vanished, c.vanished) {
				t.Errorf("vanished %q, want %q", res.Vanished, c.vanished)
			}
			if !strings.Contains(res.String(), "; 1 vanished") {
				t.Errorf("summary %q does not mention the vanished file", res.String())
			}
			want := newTree.clone()
			if c.want != nil {
				c.want(want)
			}
			if d := diffTrees(read(t, dest), expected(want)); d != "" {
				t.Errorf("merged /etc differs:\n%s", d)
			}
		})
	}
}

// TestReplacedBySymlink swaps local entries for symlinks leading outside
// while the merge reads them, between the lstat and the open: the merge
// must notice, read them again and copy the symlinks, never what they
// lead to.
func TestReplacedBySymlink(t *testing.T) {
	needRoot(t)
	outside := outsideTree(t)
	secret, conf := filepath.Join(outside, "secret"), filepath.Join(outside, "conf")
	for point, name := range map[hookPoint]string{hookCopy: "before the copy", hookOpen: "between lstat and open"} {
		t.Run(name, func(t *testing.T) {
			mc := mergeCase{local: func(tr tree) {
				tr["app"] = dir(0o755).local()
				tr["app/a"] = file("a\n", 0o644).local()
				tr["hostname"] = file("loc-host\n", 0o644).local() // same size as the image's
			}}
			b, local, dest, _ := mc.setup(t, false)
			swap := map[string]string{"app": conf, "hostname": secret}
			testHook = func(p hookPoint, rel string) {
				if target, ok := swap[rel]; ok && p == point {
					delete(swap, rel)
					must(t, os.RemoveAll(filepath.Join(local, rel)))
					must(t, os.Symlink(target, filepath.Join(local, rel)))
				}
			}
			defer func() { testHook = nil }()
			res, err := Merge(b, local, dest)
			if err != nil {
				t.Fatal(err)
			}
			for rel, target := range map[string]string{"app": conf, "hostname": secret} {
				if got, err := os.Readlink(filepath.Join(dest, rel)); err != nil || got != target {
					t.Errorf("%s in the merged /etc: %q, %v; want the symlink to %s", rel, got, err, target)
				}
			}
			// At hookOpen the diff already sees the symlink.
			want := []string{"A app", "M hostname (content)"}
			if point == hookOpen {
				want = []string{"A app", "M hostname (type file->symlink)"}
			}
			if gs := changeStrings(res.Changes); !slices.Equal(gs, want) {
				t.Errorf("changes %q, want %q", gs, want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestResultString(t *testing.T) {
	r := &Result{
		Changes: []Change{
			{Kind: Modified, Path: "a"}, {Kind: Modified, Path: "b"}, {Kind: Modified, Path: "c"},
			{Kind: Added, Path: "d"}, {Kind: Deleted, Path: "e"},
		},
		Conflicts: []Note{{Path: "a"}, {Path: "b"}},
	}
	if got, want := r.String(), "etc merge: 3 modified, 1 added, 1 deleted kept; 2 conflicts"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	r = &Result{Conflicts: []Note{{Path: "a"}}, Skipped: []Note{{Path: "s"}}, Vanished: []string{"v"}}
	if got, want := r.String(), "etc merge: 0 modified, 0 added, 0 deleted kept; 1 conflict; 1 skipped; 1 vanished"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestErrors(t *testing.T) {
	needRoot(t)
	top := t.TempDir()
	write(t, filepath.Join(top, "etc"), oldImage())
	must(t, os.Symlink("etc", filepath.Join(top, "link")))
	b := base(t, oldImage(), false)
	if _, err := Diff(b, filepath.Join(top, "link")); err == nil || !strings.Contains(err.Error(), "link") {
		t.Errorf("Diff through a symlink: %v, want an error naming it", err)
	}
	if _, err := Merge(b, filepath.Join(top, "etc"), filepath.Join(top, "link")); err == nil {
		t.Errorf("Merge into a symlink: no error")
	}
	if _, err := Diff(b, filepath.Join(top, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Diff of a missing directory: %v", err)
	}
	// An external file without digest and no Open: a precise error.
	b2 := base(t, oldImage(), true)
	b2.Open = nil
	if _, err := Diff(b2, filepath.Join(top, "etc")); err == nil || !strings.Contains(err.Error(), "no digest") {
		t.Errorf("no digest, no Open: %v", err)
	}
	// A nil Root: everything local is added.
	got, err := Diff(Base{}, filepath.Join(top, "etc"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || got[0].Kind != Added {
		t.Errorf("nil Root: %v", got)
	}
}

// TestReplacedByRename replaces a file the way editors save one (a new
// file renamed over it) between its lstat and its open: the diff must
// read the new file's metadata with its content, not mix the two.
func TestReplacedByRename(t *testing.T) {
	needRoot(t)
	mc := mergeCase{}
	b, local, dest, _ := mc.setup(t, false)
	done := false
	testHook = func(p hookPoint, rel string) {
		if p == hookOpen && rel == "hostname" && !done {
			done = true
			tmp := filepath.Join(local, ".hostname.new")
			must(t, os.WriteFile(tmp, []byte("new-host\n"), 0o600))
			must(t, os.Rename(tmp, filepath.Join(local, "hostname")))
		}
	}
	defer func() { testHook = nil }()
	res, err := Merge(b, local, dest)
	if err != nil {
		t.Fatal(err)
	}
	if gs, want := changeStrings(res.Changes), []string{"M hostname (content, mode)"}; !slices.Equal(gs, want) {
		t.Errorf("changes %q, want %q", gs, want)
	}
	if got := read(t, dest)["hostname"]; got.data != "new-host\n" || got.perm != 0o600 {
		t.Errorf("merged hostname: %v", got)
	}
}
