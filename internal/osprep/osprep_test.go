package osprep

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// memFiles keeps objects in memory, as a repository would on disk.
type memFiles map[verity.Digest][]byte

func (m memFiles) ReadContent(n *erofs.Node, limit int64) ([]byte, error) {
	b, ok := m[n.Target().Digest]
	if !ok {
		return nil, errors.New("no such object")
	}
	if int64(len(b)) > limit {
		return nil, errors.New("too large")
	}
	return b, nil
}

func (m memFiles) PutBytes(data []byte) (verity.Digest, error) {
	d := verity.DigestBytes(data)
	m[d] = bytes.Clone(data)
	return d, nil
}

var stamp = erofs.Timespec{Sec: 1700000000}

// tree builds a tree from "path" -> spec: "dir", "dir 0700", "link
// TARGET" or file content (larger than 64 bytes goes to files).
func tree(t *testing.T, files memFiles, spec map[string]string) *erofs.Node {
	t.Helper()
	root := erofs.NewDirectory("", 0o755)
	p := &prep{root: root, files: files, stamp: stamp, rep: &Report{}}
	mkdir := func(path string) *erofs.Node {
		d, err := p.mkdirAll(path)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	mkdir("usr")
	for path, s := range spec {
		dir, name := splitPath(path)
		parent := mkdir(dir)
		switch {
		case s == "dir":
			mkdir(path)
		case strings.HasPrefix(s, "dir "):
			d := mkdir(path)
			d.Mode = erofs.ModeDir | 0o700
		case strings.HasPrefix(s, "link "):
			if err := p.addSymlink(parent, name, strings.TrimPrefix(s, "link "), stamp); err != nil {
				t.Fatal(err)
			}
		default:
			n := &erofs.Node{Name: name, Mode: erofs.ModeReg | 0o644, Nlink: 1, Mtime: stamp}
			if err := parent.AddChild(n); err != nil {
				t.Fatal(err)
			}
			if err := p.setContent(n, []byte(s)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func dump(t *testing.T, root *erofs.Node) string {
	t.Helper()
	var b bytes.Buffer
	if err := erofs.WriteDump(&b, root, erofs.DumpPrintOptions{}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func image(t *testing.T, root *erofs.Node) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := erofs.Write(&b, root, erofs.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func mustPrepare(t *testing.T, root *erofs.Node, files memFiles) *Report {
	t.Helper()
	rep, err := Prepare(root, files)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func readTree(t *testing.T, root *erofs.Node, files memFiles, path string) string {
	t.Helper()
	n := lookup(root, path)
	if n == nil || !n.Target().IsRegular() {
		t.Fatalf("/%s: missing or not a file", path)
	}
	b, err := readContent(n, files)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const bashrc = "# ~/.bashrc: executed by bash(1) for non-login shells, long enough to be an object\n"

const homeConf = `# See tmpfiles.d(5) for details

Q /home 0755 - - -
q /srv 0755 - - -
d /srv/www 0755 - - -
`

const provisionConf = `# Provision SSH key for root
d- /root :0700 root :root -
d- /root/.ssh :0700 root :root -
f^ /root/.ssh/authorized_keys :0600 root :root - ssh.authorized_keys.root
`

// debianLike is the shape of an mmdebstrap minbase tree, cut down.
func debianLike() map[string]string {
	return map[string]string{
		"home":                              "dir",
		"root":                              "dir 0700",
		"root/.bashrc":                      bashrc,
		"srv":                               "dir",
		"mnt":                               "dir",
		"media":                             "dir",
		"tmp":                               "dir",
		"usr/local/bin":                     "dir",
		"usr/local/man":                     "link share/man",
		"etc/fstab":                         "# /etc/fstab: static file system information.\nUUID=1234 / ext4 errors=remount-ro 0 1\nUUID=5678 /boot ext4 defaults 0 2\n",
		"var/lib/dpkg/status":               "Package: base-files\nStatus: install ok installed\nVersion: 12.4+deb12u1\n",
		"var/lib/dpkg/arch":                 "amd64\n",
		"usr/lib/tmpfiles.d/home.conf":      homeConf,
		"usr/lib/tmpfiles.d/provision.conf": provisionConf,
	}
}

func TestPrepareDebianLike(t *testing.T) {
	files := memFiles{}
	root := tree(t, files, debianLike())
	rep := mustPrepare(t, root, files)

	for _, l := range varLinks {
		n := lookup(root, l.path)
		if n == nil || !n.IsSymlink() || n.Payload != l.target {
			t.Errorf("/%s: want a link to %s, got %+v", l.path, l.target, n)
		}
	}
	// /root's content is kept for seeding, with the directory's mode.
	if n := lookup(root, "usr/share/factory/var/roothome"); n == nil || n.Mode != erofs.ModeDir|0o700 {
		t.Errorf("factory copy of /root: %+v", n)
	}
	if got := readTree(t, root, files, "usr/share/factory/var/roothome/.bashrc"); got != bashrc {
		t.Errorf("factory .bashrc = %q", got)
	}
	if n := lookup(root, "usr/share/factory/var/usrlocal/man"); n == nil || n.Payload != "share/man" {
		t.Errorf("factory /usr/local/man: %+v", n)
	}
	// Empty directories need no factory copy.
	if lookup(root, "usr/share/factory/var/home") != nil {
		t.Error("empty /home got a factory copy")
	}

	conf := readTree(t, root, files, TmpfilesConf)
	for _, want := range []string{
		"d /var/home 0755 root root -\n",
		"C /var/roothome - - - - /usr/share/factory/var/roothome\n",
		"d /var/srv 0755 root root -\n",
		"d /var/opt 0755 root root -\n",
		"C /var/usrlocal - - - - /usr/share/factory/var/usrlocal\n",
		"d /run/media 0755 root root -\n",
		"L+ /var/lib/dpkg - - - - ../../usr/lib/sysimage/dpkg\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("cfs-deploy-os.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "rpm") {
		t.Errorf("cfs-deploy-os.conf names rpm without an rpm database:\n%s", conf)
	}

	// The package database moved to /usr, /var/lib/dpkg links to it.
	if n := lookup(root, "var/lib/dpkg"); n == nil || !n.IsSymlink() || n.Payload != "../../usr/lib/sysimage/dpkg" {
		t.Errorf("/var/lib/dpkg: %+v", n)
	}
	if got := readTree(t, root, files, "usr/lib/sysimage/dpkg/arch"); got != "amd64\n" {
		t.Errorf("moved dpkg arch = %q", got)
	}

	fstab := readTree(t, root, files, fstabPath)
	if !strings.Contains(fstab, "\n#UUID=1234 / ext4 errors=remount-ro 0 1\n") {
		t.Errorf("fstab entry for / not commented out:\n%s", fstab)
	}
	if !strings.Contains(fstab, "\nUUID=5678 /boot ext4 defaults 0 2\n") || !strings.HasSuffix(fstab, "\n"+tmpfsLine+"\n") {
		t.Errorf("fstab:\n%s", fstab)
	}
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "UUID=1234 / ext4") {
		t.Errorf("warnings %q: want one about the entry for /", rep.Warnings)
	}

	home := readTree(t, root, files, "usr/lib/tmpfiles.d/home.conf")
	for _, line := range []string{"Q /home 0755 - - -", "q /srv 0755 - - -"} {
		if strings.Contains(home, "\n"+line) || !strings.Contains(home, "#"+line+"\n") {
			t.Errorf("home.conf: %q not commented out:\n%s", line, home)
		}
	}
	if !strings.Contains(home, "\nd /srv/www 0755 - - -\n") {
		t.Errorf("home.conf: a line below /srv was touched:\n%s", home)
	}
	prov := readTree(t, root, files, "usr/lib/tmpfiles.d/provision.conf")
	if !strings.Contains(prov, "#d- /root :0700") || !strings.Contains(prov, "\nd- /root/.ssh :0700") {
		t.Errorf("provision.conf:\n%s", prov)
	}

	gen := lookup(root, GeneratorPath)
	if gen == nil || gen.Mode != erofs.ModeReg|0o755 {
		t.Fatalf("generator: %+v", gen)
	}
	if got := readTree(t, root, files, GeneratorPath); !strings.Contains(got, sysroot.UnitsDir) || !strings.HasPrefix(got, "#!/bin/sh\n") {
		t.Errorf("generator script:\n%s", got)
	}
	if got := readTree(t, root, files, MarkerPath); got != markerContent {
		t.Errorf("marker = %q", got)
	}
	if p := Check(root, files); p != nil {
		t.Errorf("Check of a prepared tree: %q", p)
	}
}

// TestPrepareIdempotent: a prepared tree prepared again is the same image,
// and two preparations of the same source give the same image.
func TestPrepareIdempotent(t *testing.T) {
	files := memFiles{}
	a := tree(t, files, debianLike())
	b := tree(t, files, debianLike())
	mustPrepare(t, a, files)
	mustPrepare(t, b, files)
	first := image(t, a)
	if !bytes.Equal(first, image(t, b)) {
		t.Fatal("two preparations of the same tree differ")
	}
	before := dump(t, a)
	rep := mustPrepare(t, a, files)
	if len(rep.Changes) != 0 || len(rep.Warnings) != 0 {
		t.Errorf("second preparation: changes %q, warnings %q", rep.Changes, rep.Warnings)
	}
	if after := dump(t, a); after != before {
		t.Errorf("second preparation changed the tree:\n%s\n---\n%s", before, after)
	}
	if !bytes.Equal(first, image(t, a)) {
		t.Error("second preparation changed the image")
	}
}

func TestFstab(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spec  map[string]string
		want  string // fstab afterwards; "" = unchanged
		warns int
	}{
		{"missing", nil, tmpComment + "\n" + tmpfsLine + "\n", 0},
		{"empty", map[string]string{"etc/fstab": ""}, tmpComment + "\n" + tmpfsLine + "\n", 0},
		{"no final newline", map[string]string{"etc/fstab": "proc /proc proc defaults 0 0"},
			"proc /proc proc defaults 0 0\n" + tmpComment + "\n" + tmpfsLine + "\n", 0},
		{"tmp mounted", map[string]string{"etc/fstab": "/dev/vdb /tmp/ ext4 defaults 0 2\n"}, "", 0},
		{"tmp commented", map[string]string{"etc/fstab": "#tmpfs /tmp tmpfs defaults 0 0\n"},
			"#tmpfs /tmp tmpfs defaults 0 0\n" + tmpComment + "\n" + tmpfsLine + "\n", 0},
		{"root and tmp", map[string]string{"etc/fstab": "  /dev/vda1\t/\text4 rw 0 1\ntmpfs /tmp tmpfs defaults 0 0\n"},
			rootComment + "\n#  /dev/vda1\t/\text4 rw 0 1\ntmpfs /tmp tmpfs defaults 0 0\n", 1},
		{"tmp.mount enabled", map[string]string{"etc/fstab": "# none\n",
			"etc/systemd/system/local-fs.target.wants/tmp.mount": "link /usr/lib/systemd/system/tmp.mount"}, "", 0},
		{"tmp.mount masked", map[string]string{"etc/fstab": "# none\n",
			"etc/systemd/system/tmp.mount": "link /dev/null"}, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := memFiles{}
			root := tree(t, files, tc.spec)
			var before string
			if tc.spec["etc/fstab"] != "" || lookup(root, fstabPath) != nil {
				before = readTree(t, root, files, fstabPath)
			}
			rep := mustPrepare(t, root, files)
			got := readTree(t, root, files, fstabPath)
			want := tc.want
			if want == "" {
				want = before
			}
			if got != want {
				t.Errorf("fstab:\n%q\nwant\n%q", got, want)
			}
			if len(rep.Warnings) != tc.warns {
				t.Errorf("warnings %q, want %d", rep.Warnings, tc.warns)
			}
			if tmp := lookup(root, "tmp"); tmp == nil || !tmp.IsDir() {
				t.Error("no /tmp mount point")
			}
			rep = mustPrepare(t, root, files)
			if got2 := readTree(t, root, files, fstabPath); got2 != got || len(rep.Warnings) != 0 && tc.warns == 1 && !strings.Contains(rep.Warnings[0], "masks") {
				t.Errorf("second preparation: fstab %q, warnings %q", got2, rep.Warnings)
			}
		})
	}
}

func TestPrepareExistingLinks(t *testing.T) {
	files := memFiles{}
	root := tree(t, files, map[string]string{
		"home":                              "link /var/home", // absolute: the same place
		"opt":                               "link /data/opt", // somewhere else: left, warned
		"usr/lib/sysimage/rpm/rpmdb.sqlite": "sqlite",
		"var/lib/rpm":                       "link ../../usr/lib/sysimage/rpm",
	})
	rep := mustPrepare(t, root, files)
	if n := lookup(root, "home"); n.Payload != "/var/home" {
		t.Errorf("/home link rewritten to %q", n.Payload)
	}
	if n := lookup(root, "opt"); n.Payload != "/data/opt" {
		t.Errorf("/opt link rewritten to %q", n.Payload)
	}
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "/opt is a link to /data/opt") {
		t.Errorf("warnings %q", rep.Warnings)
	}
	conf := readTree(t, root, files, TmpfilesConf)
	if !strings.Contains(conf, "d /var/home ") || strings.Contains(conf, "/var/opt") ||
		!strings.Contains(conf, "L+ /var/lib/rpm - - - - ../../usr/lib/sysimage/rpm\n") {
		t.Errorf("cfs-deploy-os.conf:\n%s", conf)
	}
}

func TestPrepareErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec map[string]string
		want string
	}{
		{"home is a file", map[string]string{"home": "not a dir"}, "/home is a regular file"},
		{"factory taken", map[string]string{"root/.profile": "x", "usr/share/factory/var/roothome/.profile": "y"},
			"/usr/share/factory/var/roothome: that exists already"},
		{"two dpkg databases", map[string]string{"var/lib/dpkg/status": "a", "usr/lib/sysimage/dpkg/status": "b"},
			"/var/lib/dpkg is a directory and /usr/lib/sysimage/dpkg exists too"},
		{"fstab is a directory", map[string]string{"etc/fstab": "dir"}, "/etc/fstab is a directory"},
		{"run is a link", map[string]string{"run": "link var/run"},
			"/run is a symbolic link; want a directory to mount the /run cfs-init"},
		{"generator dir is a file", map[string]string{"usr/lib/systemd/system-generators": "x"},
			"/usr/lib/systemd/system-generators is a regular file; want a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := memFiles{}
			_, err := Prepare(tree(t, files, tc.spec), files)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	if _, err := Prepare(erofs.NewDirectory("", 0o755), memFiles{}); !errors.Is(err, ErrNotOS) {
		t.Errorf("tree without /usr: %v, want ErrNotOS", err)
	}
}

// TestPrepareMountDirs: a tree without the mount points of /dev, /proc,
// /sys, /run and /sysroot (as container images and Debian trees come)
// gets them, since the image is read-only, cfs-init refuses a root without
// /run and binds the physical root on /sysroot, where cfs-deploy looks for
// the repository; existing ones stay as they are.
func TestPrepareMountDirs(t *testing.T) {
	files := memFiles{}
	root := tree(t, files, map[string]string{"proc": "dir", "run/lock": "dir"})
	rep := mustPrepare(t, root, files)
	for _, want := range []struct {
		name string
		mode uint32
	}{{"dev", 0o755}, {"sys", 0o555}, {"sysroot", 0o755}, {"tmp", 0o1777}} {
		n := root.Lookup(want.name)
		if n == nil || n.Mode != erofs.ModeDir|want.mode || n.Mtime != root.Lookup("usr").Mtime {
			t.Errorf("/%s: %+v, want a directory with mode %o and /usr's mtime", want.name, n, want.mode)
		}
		if !slices.Contains(rep.Changes, "/"+want.name+": created as a mount point") {
			t.Errorf("changes do not say /%s was created: %q", want.name, rep.Changes)
		}
	}
	for _, kept := range []string{"/proc", "/run"} {
		if slices.ContainsFunc(rep.Changes, func(c string) bool { return strings.HasPrefix(c, kept+":") }) {
			t.Errorf("existing %s was changed: %q", kept, rep.Changes)
		}
	}
	if lookup(root, "run/lock") == nil || root.Lookup("proc").Mode != erofs.ModeDir|0o755 {
		t.Error("existing /run or /proc was replaced")
	}
}

func TestCheck(t *testing.T) {
	files := memFiles{}
	root := tree(t, files, debianLike())
	p := Check(root, files)
	if len(p) != 2 || !strings.Contains(p[0], "/home, /root, /srv, /mnt, /usr/local, /media") ||
		!strings.Contains(p[1], "UUID=1234 / ext4") {
		t.Errorf("Check of an unprepared tree: %q", p)
	}
	// A tree with nothing to complain about (no such directories, no
	// fstab) passes: the check is about what breaks, not about shape.
	if p := Check(tree(t, files, nil), files); p != nil {
		t.Errorf("Check of a bare tree: %q", p)
	}
}

// TestGeneratorScript runs the generator with /bin/sh as systemd would.
func TestGeneratorScript(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "gen")
	if err := os.WriteFile(script, []byte(GeneratorScript()), 0o755); err != nil {
		t.Fatal(err)
	}
	units := filepath.Join(dir, "units")
	out := filepath.Join(dir, "out")
	run := func() {
		t.Helper()
		cmd := exec.Command("/bin/sh", script, out, out+".early", out+".late")
		cmd.Env = []string{"CFS_DEPLOY_UNITS_DIR=" + units}
		if b, err := cmd.CombinedOutput(); err != nil || len(b) != 0 {
			t.Fatalf("generator: %v, output %q", err, b)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(out, 0o755))
	run() // no units: nothing, and no failure
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Fatalf("generator wrote %v without units", ents)
	}

	must(os.MkdirAll(filepath.Join(units, "local-fs.target.requires"), 0o755))
	must(os.WriteFile(filepath.Join(units, "var.mount"), []byte("[Mount]\nWhat=/x\n"), 0o644))
	must(os.Symlink("../var.mount", filepath.Join(units, "local-fs.target.requires", "var.mount")))
	// Another generator's link in the same .requires directory stays.
	must(os.MkdirAll(filepath.Join(out, "local-fs.target.requires"), 0o755))
	must(os.Symlink("../boot.mount", filepath.Join(out, "local-fs.target.requires", "boot.mount")))
	run()
	run() // again over its own output
	if b, err := os.ReadFile(filepath.Join(out, "var.mount")); err != nil || string(b) != "[Mount]\nWhat=/x\n" {
		t.Errorf("var.mount: %q, %v", b, err)
	}
	for _, l := range []string{"var.mount", "boot.mount"} {
		if got, err := os.Readlink(filepath.Join(out, "local-fs.target.requires", l)); err != nil || got != "../"+l {
			t.Errorf("local-fs.target.requires/%s: %q, %v", l, got, err)
		}
	}
}
