// Package deploy tests the deployment verbs as an operator runs them: the
// real cfs-deploy binary on a directory sysroot, with crashes, concurrent
// runs and bad input.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
	"github.com/cfs-deploy/cfs-deploy/internal/initramfs"
	"github.com/cfs-deploy/cfs-deploy/internal/kmod"
	"github.com/cfs-deploy/cfs-deploy/internal/kmod/kmodtest"
	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
)

// host is a sysroot on the host's file system with an insecure
// repository and the commands to work on it.
type host struct {
	t       *testing.T
	sysroot string
	src     string // the tree committed as the OS
	bin     string // cfs-deploy, built with the crash points
	init    string // cfs-init, for built initramfs images
	config  string
	kver    string
	kernel  string // the kernel image the tree ships
}

type result struct {
	args           []string
	stdout, stderr string
	code           int
	signal         syscall.Signal
}

func (r result) String() string {
	return fmt.Sprintf("cfs-deploy %s: exit %d signal %v\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.signal, r.stdout, r.stderr)
}

// newHost makes a sysroot with a repository and a source tree shaped like
// a small OS with a real kernel and the modules its initramfs needs.
func newHost(t *testing.T) *host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown in checkouts)")
	}
	kt := kmodtest.Kernel(t)
	dir := t.TempDir()
	h := &host{
		t: t, sysroot: filepath.Join(dir, "sysroot"), src: filepath.Join(dir, "src"),
		bin: gobuild.T(t, "./cmd/cfs-deploy", "crashpoints"), init: gobuild.T(t, "./cmd/cfs-init"),
		config: filepath.Join(dir, "config.toml"), kver: kt.Version, kernel: kt.Vmlinuz,
	}
	must(t, os.WriteFile(h.config, nil, 0o644))
	h.write("etc/hostname", "host\n")
	h.write("etc/ssh/sshd_config", "PermitRootLogin no\n")
	h.write("var/lib/seed", "seed\n")
	h.write("usr/lib/os-release", "NAME=Test\n")
	mods := filepath.Join(h.src, "usr/lib/modules", h.kver)
	h.copy(kt.Vmlinuz, filepath.Join(mods, "vmlinuz"))
	res, err := kmod.ResolveFS(os.DirFS(kt.ModulesDir), ".", initramfs.DefaultModules(), kmod.ResolveOptions{Optional: initramfs.DefaultModules()})
	must(t, err)
	for _, m := range res.Modules {
		h.copy(filepath.Join(kt.ModulesDir, m.Path), filepath.Join(mods, m.Path))
	}
	must(t, os.MkdirAll(h.sysroot, 0o755))
	h.ok("init", "--insecure")
	return h
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (h *host) write(p, content string) {
	h.t.Helper()
	full := filepath.Join(h.src, p)
	must(h.t, os.MkdirAll(filepath.Dir(full), 0o755))
	must(h.t, os.WriteFile(full, []byte(content), 0o644))
}

func (h *host) copy(from, to string) {
	h.t.Helper()
	in, err := os.Open(from)
	must(h.t, err)
	defer in.Close()
	must(h.t, os.MkdirAll(filepath.Dir(to), 0o755))
	out, err := os.Create(to)
	must(h.t, err)
	_, err = io.Copy(out, in)
	must(h.t, err)
	must(h.t, out.Close())
}

// newKernel changes the tree's kernel image, so that the next commit has
// a kernel file of its own in /boot.
func (h *host) newKernel(tag string) {
	f, err := os.OpenFile(filepath.Join(h.src, "usr/lib/modules", h.kver, "vmlinuz"), os.O_APPEND|os.O_WRONLY, 0)
	must(h.t, err)
	_, err = f.WriteString(tag)
	must(h.t, err)
	must(h.t, f.Close())
}

// command returns the command line of a verb on this sysroot.
func (h *host) command(env []string, args ...string) *exec.Cmd {
	full := append([]string{"--config", h.config, "--repo", filepath.Join(h.sysroot, "composefs")}, args...)
	if len(args) > 0 && args[0] == "rollout" {
		full = append(full, "--cfs-init", h.init, "--insecure", "--root", "/dev/vda")
	}
	cmd := exec.Command(h.bin, full...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

func (h *host) runEnv(env []string, args ...string) result {
	h.t.Helper()
	cmd := h.command(env, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{args: args, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.signal = ws.Signal()
		}
	case err != nil:
		h.t.Fatalf("run %v: %v", args, err)
	}
	return r
}

func (h *host) run(args ...string) result { h.t.Helper(); return h.runEnv(nil, args...) }

func (h *host) ok(args ...string) string {
	h.t.Helper()
	r := h.run(args...)
	if r.code != 0 || r.signal != 0 {
		h.t.Fatalf("%v", r)
	}
	return r.stdout
}

// commit commits the source tree as the given version; it returns the
// commit id.
func (h *host) commit(version string) string {
	h.t.Helper()
	h.write("etc/version", version+"\n")
	out := h.ok("commit", "--branch", "os", "--version", version, h.src)
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "commit" {
			return f[1]
		}
	}
	h.t.Fatalf("no commit id in:\n%s", out)
	return ""
}

type deployment struct {
	Index     int    `json:"index"`
	Image     string `json:"image"`
	Commit    string `json:"commit"`
	Version   string `json:"version"`
	Kargs     string `json:"kargs"`
	Entry     string `json:"entry"`
	Default   bool   `json:"default"`
	Rollback  bool   `json:"rollback"`
	Pinned    bool   `json:"pinned"`
	Problem   string `json:"problem"`
	Stateroot string `json:"stateroot"`
}

func (h *host) status() []deployment {
	h.t.Helper()
	var st struct {
		Deployments []deployment `json:"deployments"`
	}
	must(h.t, json.Unmarshal([]byte(h.ok("status", "--json")), &st))
	return st.Deployments
}

// versions returns the deployments' versions in boot order.
func (h *host) versions() string {
	var vs []string
	for _, d := range h.status() {
		vs = append(vs, d.Version)
	}
	return strings.Join(vs, " ")
}

// checkConsistent checks what must hold after any crash: status works and
// shows no damaged deployment, every entry's boot files exist, cleanup
// works and leaves no temporaries and no state without an entry. It
// returns the versions in boot order (before cleanup).
func (h *host) checkConsistent(what string) string {
	h.t.Helper()
	st := h.status()
	var vs []string
	for _, d := range st {
		vs = append(vs, d.Version)
		if d.Problem != "" {
			h.t.Errorf("%s: deployment %d: %s", what, d.Index, d.Problem)
		}
	}
	boot := filepath.Join(h.sysroot, "boot")
	entries, err := bootcfg.ReadEntries(filepath.Join(boot, "loader/entries"))
	if err != nil {
		h.t.Errorf("%s: entries: %v", what, err)
	}
	for _, e := range entries {
		for _, p := range append([]string{e.Linux}, e.Initrd...) {
			if fi, err := os.Stat(filepath.Join(boot, p)); err != nil || fi.Size() == 0 {
				h.t.Errorf("%s: entry %s names %s: %v", what, e.File, p, err)
			}
		}
	}
	h.ok("cleanup")
	for _, top := range []string{filepath.Join(h.sysroot, "state"), boot} {
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if strings.Contains(d.Name(), ".tmp-") {
				h.t.Errorf("%s: left after cleanup: %s", what, p)
			}
			if filepath.Dir(p) == filepath.Join(h.sysroot, "state/deploy") {
				if d.IsDir() && len(d.Name()) == 64 && !h.hasEntry(d.Name()) {
					h.t.Errorf("%s: state %s has no entry after cleanup", what, d.Name())
				}
				return filepath.SkipDir
			}
			return nil
		})
	}
	return strings.Join(vs, " ")
}

func (h *host) hasEntry(image string) bool {
	for _, d := range h.status() {
		if d.Image == image {
			return true
		}
	}
	return false
}

// clone copies the sysroot for one case and returns a host working on
// the copy.
func (h *host) clone() *host {
	h.t.Helper()
	c := *h
	c.sysroot = filepath.Join(h.t.TempDir(), "sysroot")
	if out, err := exec.Command("cp", "-a", h.sysroot, c.sysroot).CombinedOutput(); err != nil {
		h.t.Fatalf("cp -a: %v: %s", err, out)
	}
	return &c
}

// waitTimeout waits for cmd, killing it after d.
func waitTimeout(cmd *exec.Cmd, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("timed out after %v", d)
	}
}
