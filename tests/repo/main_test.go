// Package repo tests the repository commands of cfs-deploy by building the
// real binary and running it as an operator would: init, commit (from a
// directory, a tar stream or a dump file), mount, ls, cat, log, show,
// branches, diff, fsck and gc. Mounting needs root and a kernel with EROFS
// and overlayfs data-only lower layers; tests that need them skip
// otherwise. Repositories are created with `init --insecure`: fs-verity is
// tested in the VM tests.
package repo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cfsrepo "github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/tests/gobuild"
	"github.com/cfs-deploy/cfs-deploy/tests/mounttest"
)

// bin is the cfs-deploy binary TestMain builds.
var bin string

func TestMain(m *testing.M) {
	var err error
	if bin, err = gobuild.Build("./cmd/cfs-deploy"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	gobuild.Cleanup()
	os.Exit(code)
}

// env is a sysroot with an insecure repository at <sysroot>/composefs.
type env struct {
	t       *testing.T
	sysroot string
	repo    string
	config  string // an empty configuration file, so the host's is not read
	extra   []string
	bin     string // the binary to run instead of bin, if set
}

// newEnv makes a sysroot in a new temporary directory and initialises its
// repository.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvAt(t, filepath.Join(t.TempDir(), "sysroot"))
}

func newEnvAt(t *testing.T, sysroot string) *env {
	t.Helper()
	e := &env{t: t, sysroot: sysroot, repo: filepath.Join(sysroot, "composefs")}
	e.config = filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(e.config, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.ok("init", "--insecure")
	return e
}

// result is what one run of the binary did.
type result struct {
	args   []string
	stdout string
	stderr string
	code   int // exit status; -1 if killed by a signal
	signal syscall.Signal
}

func (r result) String() string {
	return fmt.Sprintf("cfs-deploy %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// command returns the command line for args, with this env's repository
// and configuration.
func (e *env) command(args ...string) *exec.Cmd {
	full := append([]string{"--repo", e.repo, "--config", e.config}, args...)
	b := bin
	if e.bin != "" {
		b = e.bin
	}
	cmd := exec.Command(b, full...)
	cmd.Env = append(os.Environ(), e.extra...)
	return cmd
}

func (e *env) runIn(stdin []byte, args ...string) result {
	e.t.Helper()
	cmd := e.command(args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return finish(e.t, args, cmd, err, out.String(), errb.String())
}

func finish(t *testing.T, args []string, cmd *exec.Cmd, err error, stdout, stderr string) result {
	t.Helper()
	r := result{args: args, stdout: stdout, stderr: stderr}
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("run cfs-deploy %s: %v", strings.Join(args, " "), err)
		}
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		r.code, r.signal = -1, ws.Signal()
	default:
		r.code = ws.ExitStatus()
	}
	return r
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runIn(nil, args...)
}

// ok runs the command and fails the test unless it exits 0; it returns
// standard output.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("%v", r)
	}
	return r.stdout
}

// fails runs the command and fails the test unless it exits non-zero.
func (e *env) fails(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code == 0 {
		e.t.Fatalf("expected a failure: %v", r)
	}
	return r
}

// commit commits src to branch and returns the commit id and image digest.
func (e *env) commit(branch, src string, extra ...string) (commit, image string) {
	e.t.Helper()
	args := append([]string{"commit", "--branch", branch}, extra...)
	if src != "" {
		args = append(args, src)
	}
	return parseCommit(e.t, e.ok(args...))
}

func parseCommit(t *testing.T, out string) (commit, image string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "commit" {
			commit = f[1]
		}
		if len(f) == 2 && f[0] == "image" {
			image = f[1]
		}
	}
	if len(commit) != 64 || len(image) != 64 {
		t.Fatalf("commit output %q: no commit id and image digest", out)
	}
	return commit, image
}

// tip returns the commit a branch names, "" if there is no such branch.
func (e *env) tip(branch string) string {
	e.t.Helper()
	data, err := os.ReadFile(filepath.Join(e.repo, "refs", "heads", branch))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// fsckReport is what fsck --json prints.
type fsckReport = cfsrepo.FsckReport

// fsck runs fsck --json and returns the report and the exit status.
func (e *env) fsck(extra ...string) (fsckReport, result) {
	e.t.Helper()
	r := e.run(append([]string{"fsck", "--json"}, extra...)...)
	var rep fsckReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		e.t.Fatalf("fsck --json output: %v\n%v", err, r)
	}
	return rep, r
}

// fsckClean fails the test unless fsck finds no problem. Temporary files
// are allowed: they are what interrupted writes leave.
func (e *env) fsckClean() fsckReport {
	e.t.Helper()
	rep, r := e.fsck()
	for _, p := range rep.Problems {
		e.t.Errorf("fsck: %s: %s", p.Path, p.What)
	}
	if r.code != 0 && len(rep.Problems) == 0 {
		e.t.Errorf("fsck exits %d without problems: %v", r.code, r)
	}
	if len(rep.Problems) > 0 && r.code == 0 {
		e.t.Errorf("fsck found problems but exits 0")
	}
	return rep
}

// commits lists the indexed commit ids.
func (e *env) commits() []string {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.repo, "commits"))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, en := range ents {
		if len(en.Name()) == 64 {
			out = append(out, en.Name())
		}
	}
	return out
}

// parent returns the parent of a commit ("" if none), read with show --json.
func (e *env) parent(commit string) string {
	e.t.Helper()
	var v struct {
		Commit struct {
			Parent string `json:"parent"`
		} `json:"commit"`
	}
	if err := json.Unmarshal([]byte(e.ok("show", "--json", commit)), &v); err != nil {
		e.t.Fatal(err)
	}
	return v.Commit.Parent
}

// needRoot skips tests that mount, mknod or chown.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// needMount skips tests that mount images on kernels that cannot.
func needMount(t *testing.T) {
	t.Helper()
	needRoot(t)
	mounttest.SkipUnlessKernelHas(t, "erofs", "overlay")
}

// mount mounts ref with `cfs-deploy mount` (and extra options) on a new
// directory and unmounts it when the test ends.
func (e *env) mount(ref string, extra ...string) string {
	e.t.Helper()
	mnt := filepath.Join(e.t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		e.t.Fatal(err)
	}
	e.ok(append([]string{"mount", ref, mnt}, extra...)...)
	mounttest.UnmountLater(e.t, mnt)
	if !mounttest.IsMountPoint(mnt) {
		e.t.Fatalf("cfs-deploy mount %s %s succeeded but nothing is mounted there", ref, mnt)
	}
	return mnt
}

// loopDevices lists the loop devices in use.
func loopDevices() []string {
	ents, _ := os.ReadDir("/sys/block")
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		if data, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file")); err == nil {
			out = append(out, e.Name()+" "+strings.TrimSpace(string(data)))
		}
	}
	return out
}

// lsEntry is one entry of ls --json.
type lsEntry struct {
	Path   string `json:"path"`
	Type   string `json:"type"`
	Mode   string `json:"mode"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Size   uint64 `json:"size"`
	Mtime  string `json:"mtime"`
	Target string `json:"target"`
	Object string `json:"object"`
	Link   string `json:"hardlink_to"`
}

func (e *env) ls(args ...string) []lsEntry {
	e.t.Helper()
	var out []lsEntry
	if err := json.Unmarshal([]byte(e.ok(append([]string{"ls", "--json"}, args...)...)), &out); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// objectOf returns the repository path of the object holding a file of a
// commit.
func (e *env) objectOf(ref, path string) string {
	e.t.Helper()
	ents := e.ls(ref, path)
	if len(ents) != 1 || ents[0].Object == "" {
		e.t.Fatalf("ls %s %s: %+v, want one file with an object", ref, path, ents)
	}
	return filepath.Join(e.repo, "objects", ents[0].Object)
}

// imageObject returns the path of the object holding an image.
func (e *env) imageObject(image string) string {
	return filepath.Join(e.repo, "objects", image[:2], image[2:])
}

// snapshot lists every path under dir with its type, size and mtime, to
// show that a command changed nothing.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d %d\n", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
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
