package pull

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/tests/registrytest"
)

const realTree = "/usr/local/go/src/encoding"

func needTree(t *testing.T) {
	if _, err := os.Stat(realTree); err != nil {
		t.Skipf("no %s", realTree)
	}
}

// A build machine signs its commits; a host pulls through a configured
// remote that trusts the build key, and refuses other keys.
func TestSignedPullThroughRemote(t *testing.T) {
	needTree(t)
	build := newHost(t, "")
	key := filepath.Join(build.dir, "build.key")
	out := build.ok("keygen", key)
	verifyKey := field(t, out, "verify key")
	commit := field(t, build.ok("commit", "--branch", "os/stable", "--sign-key", key, realTree), "commit")
	if _, err := os.Stat(filepath.Join(build.repo, "commits", commit+".sig")); err != nil {
		t.Fatalf("no signature file beside the commit: %v", err)
	}
	srv := serve(t, build.repo)

	other := filepath.Join(build.dir, "other.key")
	build.ok("keygen", other)
	build.fails("keygen", other) // no overwrite without --force

	// A host that trusts another key refuses before fetching objects.
	host := newHost(t, fmt.Sprintf("[remote.origin]\nurl = %q\nverify-keys = [%q]\n", srv.URL, other+".pub"))
	r := host.fails("pull", "origin", "os/stable")
	if !strings.Contains(r.stderr, "not signed by a trusted key") {
		t.Errorf("untrusted signer: %v", r)
	}
	if n := srv.objectRequests(); n != 1 {
		t.Errorf("%d object requests before refusing (only the commit record may be read)", n)
	}
	if host.tip("os/stable") != "" {
		t.Fatal("branch created by a refused pull")
	}

	// The right key: inline in the configuration.
	host.writeConfig(fmt.Sprintf("[remote.origin]\nurl = %q\nverify-keys = [%q]\n", srv.URL, verifyKey))
	var res struct {
		Commit   string `json:"commit"`
		Fetched  int    `json:"fetched_objects"`
		Objects  int    `json:"objects"`
		Bytes    int64  `json:"bytes"`
		SignedBy string `json:"signed_by"`
		Seconds  float64
	}
	host.json(&res, "pull", "origin", "os/stable", "--as", "os")
	if res.Commit != commit || res.Fetched != res.Objects || res.Fetched < 100 || res.SignedBy == "" || res.Bytes == 0 {
		t.Errorf("pull --json: %+v", res)
	}
	if host.tip("os") != commit {
		t.Fatalf("local branch os = %q", host.tip("os"))
	}
	host.fsckClean()

	// --verify-key adds a key: a commit must be signed by one of them.
	unsigned := field(t, build.ok("commit", "--branch", "unsigned", realTree), "commit")
	r = host.fails("pull", srv.URL, "unsigned", "--verify-key", key+".pub")
	if !strings.Contains(r.stderr, "not signed") || !strings.Contains(r.stderr, unsigned) {
		t.Errorf("unsigned commit: %v", r)
	}
	build.ok("sign", "--key", key, "unsigned")
	host.ok("pull", srv.URL, "unsigned", "--verify-key", key+".pub")
}

// rollout with [deploy] require-signature refuses an unsigned commit and
// lets a signed one through to its next check.
func TestRolloutRequiresSignature(t *testing.T) {
	needTree(t)
	h := newHost(t, "")
	key := filepath.Join(h.dir, "k")
	h.ok("keygen", key)
	h.writeConfig(fmt.Sprintf("[deploy]\nrequire-signature = true\nverify-keys = [%q]\n", key+".pub"))
	h.ok("commit", "--branch", "unsigned", realTree)
	h.ok("commit", "--branch", "signed", "--sign-key", key, realTree)
	sysroot := filepath.Dir(h.repo)
	r := h.fails("rollout", "--insecure", "--sysroot", sysroot, "--root", "/dev/vda", "unsigned")
	if !strings.Contains(r.stderr, "not signed") || !strings.Contains(r.stderr, "require-signature") {
		t.Errorf("unsigned rollout: %v", r)
	}
	// The signed commit passes the signature check; this tree has no
	// kernel, which is what stops it next.
	r = h.fails("rollout", "--insecure", "--sysroot", sysroot, "--root", "/dev/vda", "signed")
	if strings.Contains(r.stderr, "not signed") || !strings.Contains(r.stderr, "is signed by key") || !strings.Contains(r.stderr, "kernel") {
		t.Errorf("signed rollout: %v", r)
	}
	if _, err := os.Stat(filepath.Join(sysroot, "state", "deploy")); err == nil {
		t.Error("a refused rollout created deployment state")
	}
}

// A pull killed with SIGKILL leaves the branch alone and fsck clean; the
// next pull fetches only what is missing.
func TestKilledPullResumes(t *testing.T) {
	needTree(t)
	build := newHost(t, "")
	build.ok("commit", "--branch", "os", realTree)
	srv := serve(t, build.repo)
	srv.delay = func() { time.Sleep(15 * time.Millisecond) }
	host := newHost(t, "")
	cmd := host.cmd("pull", srv.URL, "os", "--jobs", "2")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		srv.mu.Lock()
		n := srv.objects
		srv.mu.Unlock()
		if n >= 60 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("only %d object requests in 20s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if host.tip("os") != "" {
		t.Fatal("a killed pull moved the branch")
	}
	host.fsckClean()
	srv.delay = nil
	before := srv.objectRequests()
	var res struct {
		Objects int `json:"objects"`
		Present int `json:"present_objects"`
		Fetched int `json:"fetched_objects"`
	}
	host.json(&res, "pull", srv.URL, "os")
	n := srv.objectRequests()
	if res.Present < before-10 || n != res.Fetched+1 { // +1: the commit record
		t.Errorf("resumed pull: %d present (%d were requested before the kill), %d fetched in %d object requests", res.Present, before, res.Fetched, n)
	}
	host.fsckClean()
	t.Logf("killed after %d object requests; the rerun found %d present and fetched %d", before, res.Present, res.Fetched)
}

// push writes a commit to a registry; pull on another host gives the same
// image digest.
func TestPushPullRegistry(t *testing.T) {
	needTree(t)
	reg := registrytest.Start(t)
	build := newHost(t, "")
	out := build.ok("commit", "--branch", "os", realTree)
	image := field(t, out, "image")
	ref := "docker://" + reg.Host + "/os/encoding:1"
	build.ok("push", ref, "os")
	host := newHost(t, fmt.Sprintf("[remote.registry]\nurl = %q\n", ref))
	out = host.ok("pull", "registry", "os")
	if got := field(t, out, "image"); got != image {
		t.Errorf("pulled image %s, pushed commit's image %s", got, image)
	}
	var res struct {
		UpToDate bool `json:"up_to_date"`
	}
	host.json(&res, "pull", ref, "os")
	if !res.UpToDate {
		t.Error("second pull of the same image is not up to date")
	}
	host.fsckClean()
	r := host.fails("pull", ref, "os", "--verify-key", "ed25519:"+strings.Repeat("A", 43)+"=")
	if !strings.Contains(r.stderr, "container image") {
		t.Errorf("verify-key on an image: %v", r)
	}
}

// On a terminal, pull draws a progress line (objects, bytes, rate, ETA)
// and ends with a summary.
func TestPullProgressOnTerminal(t *testing.T) {
	needTree(t)
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("no script(1) to give pull a terminal")
	}
	build := newHost(t, "")
	build.ok("commit", "--branch", "os", realTree)
	srv := serve(t, build.repo)
	srv.delay = func() { time.Sleep(20 * time.Millisecond) }
	host := newHost(t, "")
	line := strings.Join([]string{bin, "--repo", host.repo, "--config", host.config, "pull", srv.URL, "os"}, " ")
	out, err := exec.Command("script", "-qfec", line, "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("script: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"pulling: ", " objects, ", "/s, ETA ", "pulled " + srv.URL + " os into os: 1 commit(s), "} {
		if !strings.Contains(text, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, text)
		}
	}
}
