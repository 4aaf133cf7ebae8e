// Package pull tests pull, push, keygen, sign and rollout's signature
// requirement by running the real cfs-deploy binary against servers the
// tests start on 127.0.0.1: a Go static file server for published
// repositories, Debian's docker-registry for images.
package pull

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cfs-deploy-pull-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "cfs-deploy")
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/cfs-deploy")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/cfs-deploy: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// host is a repository with its own configuration file, as on one machine.
type host struct {
	t      *testing.T
	dir    string
	repo   string
	config string
}

func newHost(t *testing.T, config string) *host {
	t.Helper()
	dir := t.TempDir()
	h := &host{t: t, dir: dir, repo: filepath.Join(dir, "composefs"), config: filepath.Join(dir, "config.toml")}
	h.writeConfig(config)
	h.ok("init", "--insecure")
	return h
}

func (h *host) writeConfig(text string) {
	h.t.Helper()
	if err := os.WriteFile(h.config, []byte(text), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("cfs-deploy %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

func (h *host) cmd(args ...string) *exec.Cmd {
	return exec.Command(bin, append([]string{"--repo", h.repo, "--config", h.config}, args...)...)
}

func (h *host) run(args ...string) result {
	h.t.Helper()
	cmd := h.cmd(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{args: args, stdout: out.String(), stderr: errb.String()}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			h.t.Fatalf("run %v: %v", args, err)
		}
		r.code = ee.ExitCode()
	}
	return r
}

func (h *host) ok(args ...string) string {
	h.t.Helper()
	r := h.run(args...)
	if r.code != 0 {
		h.t.Fatalf("%v", r)
	}
	return r.stdout
}

func (h *host) fails(args ...string) result {
	h.t.Helper()
	r := h.run(args...)
	if r.code == 0 {
		h.t.Fatalf("expected a failure: %v", r)
	}
	return r
}

func (h *host) json(v any, args ...string) {
	h.t.Helper()
	out := h.ok(append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		h.t.Fatalf("%v: output %q: %v", args, out, err)
	}
}

// field returns the value after "name " in command output.
func field(t *testing.T, out, name string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %q in %q", name, out)
	return ""
}

func (h *host) tip(branch string) string {
	data, err := os.ReadFile(filepath.Join(h.repo, "refs", "heads", branch))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// fsckClean runs fsck and fails on any problem (temporary files left by
// a killed process are allowed: they are not problems, gc removes them).
func (h *host) fsckClean() {
	h.t.Helper()
	var rep struct {
		Objects  int `json:"objects"`
		Problems []struct {
			Path, Problem string
		} `json:"problems"`
	}
	r := h.run("fsck", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 0 || len(rep.Problems) > 0 {
		h.t.Fatalf("fsck: %v", r)
	}
}

// fileServer serves dir on 127.0.0.1, counting requests for objects and
// optionally slowing each down.
type fileServer struct {
	*httptest.Server
	mu      sync.Mutex
	objects int
	delay   func()
}

func serve(t *testing.T, dir string) *fileServer {
	s := &fileServer{}
	fs := http.FileServer(http.Dir(dir))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/objects/") {
			s.mu.Lock()
			s.objects++
			delay := s.delay
			s.mu.Unlock()
			if delay != nil {
				delay()
			}
		}
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *fileServer) objectRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.objects
	s.objects = 0
	return n
}
