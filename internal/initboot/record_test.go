package initboot

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// fakeClock returns a Log whose uptime is set by the test.
func fakeClock(out *bytes.Buffer, kmsg *bytes.Buffer, debug bool, start time.Duration) (*Log, *time.Duration) {
	now := start
	l := &Log{out: out, debug: debug, now: func() time.Duration { return now }, start: start}
	if kmsg != nil {
		l.kmsg = kmsg
	}
	return l, &now
}

func TestLogLines(t *testing.T) {
	var out, kmsg bytes.Buffer
	l, now := fakeClock(&out, &kmsg, false, 2*time.Second+345678*time.Microsecond)
	tm := l.Begin("mount-root")
	*now += 3 * time.Millisecond
	tm.End("mounted %s on /sysroot (%s)", "/dev/vda", "ext4")
	if out.Len() != 0 {
		t.Errorf("step line printed without cfs.debug: %q", out.String())
	}
	l.Printf("refusing to boot: x.")
	if got, want := out.String(), "[    2.348678] cfs-init: refusing to boot: x.\n"; got != want {
		t.Errorf("error line %q, want %q", got, want)
	}
	if got, want := kmsg.String(), "<7>cfs-init: refusing to boot: x.\n"; got != want {
		t.Errorf("kmsg %q, want %q", got, want)
	}

	out.Reset()
	l.SetDebug(true)
	tm = l.Begin("mount-root")
	*now += 3 * time.Millisecond
	tm.End("mounted %s on /sysroot (%s)", "/dev/vda", "ext4")
	tm = l.Begin("modules")
	*now += 1250 * time.Millisecond
	tm.End("loaded kernel modules")
	want := "[    2.351678] cfs-init: mounted /dev/vda on /sysroot (ext4, 3.0 ms)\n" +
		"[    3.601678] cfs-init: loaded kernel modules (1.25 s)\n"
	if out.String() != want {
		t.Errorf("debug lines:\n%s\nwant:\n%s", out.String(), want)
	}
	if strings.Contains(kmsg.String(), "mounted") {
		t.Error("step lines went to /dev/kmsg, which rate-limits")
	}
	steps := l.Steps()
	if len(steps) != 3 || steps[2].Name != "modules" || steps[2].MS != 1250 {
		t.Errorf("steps %+v", steps)
	}
}

func TestBootRecord(t *testing.T) {
	var out bytes.Buffer
	l, now := fakeClock(&out, nil, false, 2*time.Second)
	for _, s := range []struct {
		name string
		d    time.Duration
	}{{"api-mounts", time.Millisecond}, {"modules", 700 * time.Millisecond}, {"wait-root", 20 * time.Millisecond}, {"mount-image", 9 * time.Millisecond}} {
		tm := l.Begin(s.name)
		*now += s.d
		tm.End("")
	}
	*now += 10 * time.Millisecond

	d, _ := verity.ParseDigest(digestA)
	img := &chosenImage{Rel: "composefs/images/" + digestA, KernelVerity: true}
	img.Ref.Digest, img.Ref.Source = d, "composefs="+digestA
	dep := &deployment{Dir: "state/deploy/" + digestA, Etc: "state/deploy/" + digestA + "/etc", StateRoot: "default", Var: "state/os/default/var"}
	rec := &BootRecord{Mode: "pid1", Device: "/dev/vda", FSType: "ext4", Init: "/sbin/init"}
	fillRecord(rec, img, dep, "/sysroot")
	rec.Timings = l.timing()

	run := t.TempDir()
	if err := writeBootRecord(run, rec); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(run, "cfs-deploy", "booted.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{
		"mode": "pid1", "digest": digestA, "arg": "composefs=" + digestA, "insecure": false, "kernel_verity": true,
		"image": "/sysroot/composefs/images/" + digestA, "sysroot": "/sysroot",
		"deployment": "/sysroot/state/deploy/" + digestA, "stateroot": "default",
		"etc": "/sysroot/state/deploy/" + digestA + "/etc", "var": "/sysroot/state/os/default/var",
		"device": "/dev/vda", "fstype": "ext4", "read_only": false, "init": "/sbin/init",
	} {
		if m[k] != v {
			t.Errorf("booted.json %s = %v, want %v", k, m[k], v)
		}
	}
	timings := m["timings"].(map[string]any)
	for k, v := range map[string]float64{
		"init_start_ms": 2000, "total_since_kernel_ms": 2740, "total_since_init_ms": 740, "own_ms": 20,
	} {
		if timings[k] != v {
			t.Errorf("timings %s = %v, want %v", k, timings[k], v)
		}
	}
	if steps := timings["steps"].([]any); len(steps) != 4 {
		t.Errorf("steps %v", steps)
	}

	// What cfs-deploy will read back: the record parses as JSON into the
	// same struct.
	var back BootRecord
	raw, err = os.ReadFile(filepath.Join(run, BootRecordPath))
	if err == nil {
		err = json.Unmarshal(raw, &back)
	}
	if err != nil || back.Digest.String() != digestA || back.Timings.Own != 20 {
		t.Errorf("read back %+v, %v", back, err)
	}
	want := "booting composefs image " + digestA + " from /dev/vda: own work 20 ms, 740 ms since cfs-init started, 2.74 s since kernel start"
	if got := recordSummary(rec); got != want {
		t.Errorf("summary\n got %s\nwant %s", got, want)
	}
}

func TestMountSource(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(p, []byte(`22 1 0:21 / /proc rw,relatime - proc proc rw
40 1 254:0 / /sys\040root rw,relatime shared:1 - ext4 /dev/vda rw
41 40 254:0 / /sys\040root rw,relatime shared:1 - overlay composefs ro
`), 0o644)
	if src, typ := mountSource(p, "/sys root"); src != "composefs" || typ != "overlay" {
		t.Errorf("topmost mount: %q %q", src, typ)
	}
	if src, typ := mountSource(p, "/nothing"); src != "" || typ != "" {
		t.Errorf("no mount: %q %q", src, typ)
	}
}
