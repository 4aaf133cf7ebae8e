package deploy

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/crashpoint"
	"github.com/cfs-deploy/cfs-deploy/internal/filelock"
)

// crashBase makes the sysroot every crash case starts from: v1 and v2
// deployed (v2 the default), v3 committed with a kernel of its own. It
// returns v3's commit id.
func crashBase(t *testing.T) (*host, string) {
	h := newHost(t)
	h.commit("1")
	h.ok("rollout", "os")
	h.commit("2")
	h.ok("rollout", "os")
	h.newKernel("v3")
	v3 := h.commit("3")
	if got := h.versions(); got != "2 1" {
		t.Fatalf("base: %q", got)
	}
	return h, v3
}

// TestCrashSafety kills each verb with SIGKILL at each of its write
// steps and checks that the sysroot boots the old or the new state,
// status works and cleanup removes the leftovers; then the verb, run
// again, does its job.
func TestCrashSafety(t *testing.T) {
	base, v3 := crashBase(t)
	cases := []struct {
		verb    []string
		points  []string
		before  string // versions in boot order before
		after   string // and after the verb
		noRerun bool   // running the verb again would undo it
	}{
		{[]string{"rollout", "--keep-rollback", "1", v3}, []string{
			"checkout-etc", "state", "atomicfile-before-rename", "bootfiles", "entry", "loader",
			"undeploy-entry", "state-renamed", "undeploy-state",
		}, "2 1", "3 2", false},
		{[]string{"rollback"}, []string{"atomicfile-before-rename", "rollback-entry"}, "2 1", "1 2", true},
		{[]string{"undeploy", "1"}, []string{"undeploy-entry", "state-renamed", "undeploy-state"}, "2 1", "2", true},
		{[]string{"kargs", "--append", "quiet"}, []string{"atomicfile-before-rename"}, "2 1", "2 1", false},
	}
	for _, c := range cases {
		for _, point := range c.points {
			name := c.verb[0] + "/" + point
			t.Run(name, func(t *testing.T) {
				h := base.clone()
				h.t = t
				r := h.runEnv([]string{crashpoint.Env + "=" + point}, c.verb...)
				if r.signal != syscall.SIGKILL {
					t.Fatalf("not killed at %s: %v", point, r)
				}
				// The boot loader's default is the old or the new one; a
				// crash before retention finished may leave more
				// deployments than keep-rollback, which the next
				// rollout removes.
				got := h.checkConsistent(name)
				if first(got) != first(c.before) && first(got) != first(c.after) {
					t.Errorf("after a crash at %s the order is %q, want the default of %q or %q", point, got, c.before, c.after)
				}
				if !c.noRerun || got == c.before {
					h.ok(c.verb...)
					if got := h.checkConsistent(name + " rerun"); got != c.after {
						t.Errorf("after a crash at %s and a rerun the order is %q, want %q", point, got, c.after)
					}
				}
			})
		}
	}

	// A crash at a random moment of a rollout, a few times over.
	start := time.Now()
	h := base.clone()
	h.ok("rollout", v3)
	took := time.Since(start)
	for i := range 6 {
		h := base.clone()
		h.t = t
		cmd := h.command(nil, "rollout", "--keep-rollback", "1", v3)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(took))))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		got := h.checkConsistent("random kill")
		if got != "2 1" && got != "3 2" && got != "3 2 1" {
			t.Errorf("random kill %d: order %q", i, got)
		}
		h.ok("rollout", "--keep-rollback", "1", v3)
		if got := h.versions(); got != "3 2" {
			t.Errorf("random kill %d, rerun: order %q", i, got)
		}
	}
}

// TestSerialised: the verbs that change a sysroot wait for each other on
// the state lock, and two at once both do their job.
func TestSerialised(t *testing.T) {
	h, v3 := crashBase(t)
	unlock, err := filelock.Exclusive(filepath.Join(h.sysroot, "state/lock"))
	must(t, err)
	cmd := h.command(nil, "rollback")
	must(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		unlock()
		t.Fatalf("rollback ran while the state lock was held: %v", err)
	case <-time.After(time.Second):
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatalf("rollback after the lock was released: %v", err)
	}
	if got := h.versions(); got != "1 2" {
		t.Fatalf("after rollback: %q", got)
	}

	// A rollout and a pin at the same time.
	roll := h.command(nil, "rollout", "--no-retention", v3)
	pin := h.command(nil, "pin", "1")
	must(t, roll.Start())
	must(t, pin.Start())
	if err := waitTimeout(roll, 2*time.Minute); err != nil {
		t.Errorf("rollout beside pin: %v", err)
	}
	if err := waitTimeout(pin, 2*time.Minute); err != nil {
		t.Errorf("pin beside rollout: %v", err)
	}
	st := h.status()
	pinned := 0
	for _, d := range st {
		if d.Pinned {
			pinned++
		}
	}
	if len(st) != 3 || st[0].Version != "3" || pinned != 1 {
		t.Errorf("after rollout and pin at once: %+v", st)
	}
	h.checkConsistent("concurrent")
}

// TestBadInput: each mistake gives one clear message and a non-zero exit,
// and leaves every deployment as it was.
func TestBadInput(t *testing.T) {
	h, _ := crashBase(t)
	before := h.versions()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"undeploy", "7"}, "no such deployment"},
		{[]string{"pin", "9"}, "no such deployment"},
		{[]string{"kargs", "--deployment", "5"}, "no such deployment"},
		{[]string{"kargs", "--append", "init=sbin/init"}, "cfs-init would refuse"},
		{[]string{"kargs", "--replace", "root=/dev/sdz"}, "root= is set by rollout"},
		{[]string{"rollout", "--karg", "rootwait=forever", "os"}, "cfs-init would refuse"},
		{[]string{"status", "--sysroot", t.TempDir()}, "not a cfs-deploy sysroot"},
	} {
		r := h.run(c.args...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 1 {
			t.Errorf("%v\nwant one line saying %q", r, c.want)
		}
	}
	if got := h.versions(); got != before {
		t.Errorf("bad input changed the deployments: %q, was %q", got, before)
	}

	// A damaged deployment: its state is a symlink, or its origin is
	// garbage. status says so and exits 0; rollback to it is refused.
	st := h.status()
	dir := filepath.Join(h.sysroot, "state/deploy", st[1].Image)
	must(t, os.WriteFile(filepath.Join(dir, "origin.json"), []byte("garbage"), 0o644))
	r := h.run("status")
	if r.code != 0 || !strings.Contains(r.stdout, "PROBLEM: origin") {
		t.Errorf("status with a corrupt origin.json: %v", r)
	}
	if r := h.run("rollback"); r.code == 0 || !strings.Contains(r.stderr, "damaged") {
		t.Errorf("rollback to a damaged deployment: %v", r)
	}
	must(t, os.RemoveAll(dir))
	must(t, os.Symlink("/etc", dir))
	if r := h.run("status"); r.code != 0 || !strings.Contains(r.stdout, "PROBLEM") {
		t.Errorf("status with a state symlink: %v", r)
	}
	// The default still boots: its entry and state are untouched.
	if st := h.status(); st[0].Problem != "" || st[0].Version != "2" {
		t.Errorf("default after damage to the rollback: %+v", st[0])
	}
}

// first returns the first of a list of versions: the default.
func first(versions string) string {
	f, _, _ := strings.Cut(versions, " ")
	return f
}
