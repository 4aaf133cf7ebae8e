package vmtest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/filelock"
)

// Debian describes a Debian tree that mmdebstrap builds. Its Key names the
// cached tarball, so a changed package list or option builds a new one.
type Debian struct {
	Suite    string   // e.g. bookworm
	Variant  string   // mmdebstrap --variant, e.g. minbase
	Packages []string // --include, on top of the variant
	// DpkgOpts are --dpkgopt lines (path-exclude/path-include filters).
	DpkgOpts []string
}

// DebianSystemd is a stock Debian 12 that boots with systemd: minbase plus
// init, udev, kmod, D-Bus and the ext4 tools. Manual pages, translations
// and documentation other than the copyright files are left out, as
// Debian's own container images do: they cost commit and pull time in the
// VM and nothing boots differently without them.
var DebianSystemd = Debian{
	Suite:    "bookworm",
	Variant:  "minbase",
	Packages: []string{"systemd-sysv", "udev", "kmod", "dbus", "e2fsprogs"},
	DpkgOpts: []string{
		"path-exclude=/usr/share/man/*",
		"path-exclude=/usr/share/locale/*",
		"path-include=/usr/share/locale/locale.alias",
		"path-exclude=/usr/share/doc/*",
		"path-include=/usr/share/doc/*/copyright",
	},
}

// Key is a digest of everything that decides the tree's content but the
// mirror's state: package order does not matter, options do.
func (d Debian) Key() string {
	pkgs := append([]string(nil), d.Packages...)
	sort.Strings(pkgs)
	h := sha256.New()
	fmt.Fprintf(h, "suite %s\nvariant %s\ninclude %s\n", d.Suite, d.Variant, strings.Join(pkgs, ","))
	for _, o := range d.DpkgOpts {
		fmt.Fprintf(h, "dpkgopt %s\n", o)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// CacheName is the tarball's name in CacheDir.
func (d Debian) CacheName() string {
	return "debian-" + d.Suite + "-" + d.Key() + ".tar"
}

// mmdebstrapArgs builds the tree as a tarball at out. /dev stays empty:
// the booted system mounts devtmpfs there, and device nodes have no place
// in an image.
func (d Debian) mmdebstrapArgs(out, mirror string) []string {
	args := []string{"--variant=" + d.Variant, "--skip=output/dev"}
	if len(d.Packages) > 0 {
		args = append(args, "--include="+strings.Join(d.Packages, ","))
	}
	for _, o := range d.DpkgOpts {
		args = append(args, "--dpkgopt="+o)
	}
	args = append(args, d.Suite, out)
	if mirror != "" {
		args = append(args, mirror)
	}
	return args
}

var debianOnce struct {
	sync.Mutex
	built map[string]string // by key: the tarball
}

// DebianTarball returns the cached tarball of d, building it with
// mmdebstrap the first time (about 40 s with a nearby mirror). The mirror
// is the one apt is configured with. Without mmdebstrap, or when the build
// fails (no archive), the test is skipped with the reason (or fails, with
// RequiredEnv=1).
func DebianTarball(t testing.TB, d Debian) string {
	t.Helper()
	Require(t)
	debianOnce.Lock()
	defer debianOnce.Unlock()
	if p := debianOnce.built[d.Key()]; p != "" {
		return p
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		skipOrFail(t, "mmdebstrap not found (Debian package mmdebstrap)")
	}
	mirror := AptMirror("/etc/apt/sources.list", "/etc/apt/sources.list.d")
	start := time.Now()
	p := filepath.Join(CacheDir, d.CacheName())
	built, err := BuildCached(p, func(tmp string) error {
		t.Logf("building %s with mmdebstrap from %s", p, mirror)
		out, err := exec.Command("mmdebstrap", d.mmdebstrapArgs(tmp, mirror)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("mmdebstrap %s: %v: %s", strings.Join(d.mmdebstrapArgs(tmp, mirror), " "), err, lastLines(out, 10))
		}
		return nil
	})
	if err != nil {
		skipOrFail(t, "Debian tree: "+err.Error())
	}
	if built {
		t.Logf("Debian tree %s built in %v", p, time.Since(start).Round(time.Millisecond))
	}
	if debianOnce.built == nil {
		debianOnce.built = map[string]string{}
	}
	debianOnce.built[d.Key()] = p
	return p
}

// BuildCached makes the file p with build unless it exists. build writes a
// temporary file next to p, which becomes p only once build succeeded, so
// a crash or a failure never leaves a partial p. A lock file in p's
// directory keeps two processes from building the same file at once.
func BuildCached(p string, build func(tmp string) error) (built bool, err error) {
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	if _, err := os.Stat(p); err == nil {
		return false, nil
	}
	unlock, err := filelock.Exclusive(p + ".lock")
	if err != nil {
		return false, err
	}
	defer unlock()
	if _, err := os.Stat(p); err == nil {
		return false, nil // another process built it while we waited
	}
	tmp := fmt.Sprintf("%s.tmp-%d", p, os.Getpid())
	defer os.Remove(tmp)
	if err := build(tmp); err != nil {
		return false, err
	}
	if _, err := os.Stat(tmp); err != nil {
		return false, fmt.Errorf("the build left no %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return false, err
	}
	return true, nil
}

// AptMirror returns the first Debian archive URL (not the security
// archive) in the apt sources: a sources.list file in one-line format and
// the deb822 .sources (and .list) files of a directory. "" if none.
func AptMirror(list, dir string) string {
	files := []string{list}
	if more, err := filepath.Glob(filepath.Join(dir, "*")); err == nil {
		sort.Strings(more)
		files = append(files, more...)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, u := range sourceURLs(b) {
			if !strings.Contains(u, "security") {
				return u
			}
		}
	}
	return ""
}

// sourceURLs returns the archive URLs of the deb (binary) entries of an
// apt sources file in either format.
func sourceURLs(b []byte) []string {
	var urls []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	deb822Binary := true // a stanza's Types: precedes or follows its URIs:
	var stanza []string
	flush := func() {
		if deb822Binary {
			urls = append(urls, stanza...)
		}
		stanza, deb822Binary = nil, true
	}
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" {
			flush()
			continue
		}
		if strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		switch {
		case f[0] == "deb" && len(f) >= 2:
			// deb [options] URL suite ...
			i := 1
			if strings.HasPrefix(f[i], "[") {
				for i < len(f) && !strings.HasSuffix(f[i], "]") {
					i++
				}
				i++
			}
			if i < len(f) {
				urls = append(urls, f[i])
			}
		case strings.EqualFold(f[0], "Types:"):
			deb822Binary = false
			for _, ty := range f[1:] {
				if ty == "deb" {
					deb822Binary = true
				}
			}
		case strings.EqualFold(f[0], "URIs:"):
			stanza = append(stanza, f[1:]...)
		}
	}
	flush()
	return urls
}

// ExtractTar unpacks a tarball into dst (created) as root would: numeric
// owners, permissions and extended attributes as stored.
func ExtractTar(tarball, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	out, err := exec.Command("tar", "-C", dst, "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("tar -x %s: %v: %s", tarball, err, lastLines(out, 5))
	}
	return nil
}

// lastLines returns the last n lines of out, for error messages.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
