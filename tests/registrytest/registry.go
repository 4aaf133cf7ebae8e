// Package registrytest runs a real container registry for tests: Debian's
// docker-registry (the CNCF distribution registry) on a free 127.0.0.1
// port, with its storage in a temporary directory, stopped by PID when the
// test ends.
package registrytest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Registry is a running registry.
type Registry struct {
	// Host is "127.0.0.1:PORT", for references like Host+"/repo:tag".
	Host string
	Dir  string // its storage
	log  *bytes.Buffer
}

// Binary is the registry program the Debian package installs.
const Binary = "docker-registry"

// Start starts a registry, or skips the test when the program is missing
// (unless CFS_DEPLOY_REGISTRY_REQUIRED is set: scripts/install-deps
// installs it, and CI must not skip).
func Start(t testing.TB) *Registry {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		if os.Getenv("CFS_DEPLOY_REGISTRY_REQUIRED") != "" {
			t.Fatalf("%s not installed (scripts/install-deps installs it)", Binary)
		}
		t.Skipf("%s not installed (apt-get install docker-registry)", Binary)
	}
	dir := t.TempDir()
	var lastErr error
	// The port is picked free and then handed to the registry; another
	// process may take it in between, so try a few.
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		r, err := start(t, bin, dir, port)
		if err == nil {
			return r
		}
		lastErr = err
	}
	t.Fatalf("start %s: %v", Binary, lastErr)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(t testing.TB, bin, dir string, port int) (*Registry, error) {
	host := fmt.Sprintf("127.0.0.1:%d", port)
	storage := filepath.Join(dir, fmt.Sprintf("storage-%d", port))
	cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", port))
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, storage, host)), 0o644)
	if err != nil {
		return nil, err
	}
	r := &Registry{Host: host, Dir: storage, log: &bytes.Buffer{}}
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = r.log, r.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("exited: %v\n%s", err, r.log)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("no answer on %s/v2/ after 15s\n%s", host, r.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", Binary, r.log)
		}
	})
	return r, nil
}

// Proxy is a reverse proxy in front of a registry on another 127.0.0.1
// port that counts the bytes of blob downloads, so a test can see what a
// client fetched.
type Proxy struct {
	Host string
	mu   sync.Mutex
	// Blobs maps a blob digest to the bytes sent for GETs of it.
	blobs map[string]int64
}

// NewProxy starts a counting proxy for r.
func NewProxy(t testing.TB, r *Registry) *Proxy {
	t.Helper()
	target, _ := url.Parse("http://" + r.Host)
	p := &Proxy{blobs: map[string]int64{}}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet {
			if d, ok := blobDigest(resp.Request.URL.Path); ok {
				resp.Body = &countingBody{ReadCloser: resp.Body, add: func(n int) {
					p.mu.Lock()
					p.blobs[d] += int64(n)
					p.mu.Unlock()
				}}
			}
		}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	p.Host = l.Addr().String()
	return p
}

// Blobs returns the bytes sent per blob digest so far and resets them.
func (p *Proxy) Blobs() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.blobs
	p.blobs = map[string]int64{}
	return b
}

// blobDigest recognises /v2/<name>/blobs/<digest>.
func blobDigest(path string) (string, bool) {
	dir, d := filepath.Split(path)
	if filepath.Base(filepath.Clean(dir)) != "blobs" {
		return "", false
	}
	return d, true
}

type countingBody struct {
	io.ReadCloser
	add func(int)
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.add(n)
	return n, err
}
