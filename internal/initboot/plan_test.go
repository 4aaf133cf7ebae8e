package initboot

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
)

const (
	digestA = "ab12000000000000000000000000000000000000000000000000000000000001"
	digestB = "cd34000000000000000000000000000000000000000000000000000000000002"
	digestC = "ef56000000000000000000000000000000000000000000000000000000000003"
)

func TestPlanBasics(t *testing.T) {
	p, err := NewPlan("console=ttyS0 root=/dev/vda composefs=" + digestA)
	if err != nil {
		t.Fatal(err)
	}
	if p.Root != (bootcfg.RootSpec{Kind: bootcfg.RootPath, Value: "/dev/vda"}) {
		t.Errorf("root %+v", p.Root)
	}
	if p.ReadOnly {
		t.Error("root is read-only without ro")
	}
	if p.RootTimeout != DefaultRootTimeout || p.RootWait {
		t.Errorf("wait %v %v, want %v without rootwait", p.RootTimeout, p.RootWait, DefaultRootTimeout)
	}
	if p.Init != "/sbin/init" || p.Debug || p.Emergency || p.RebootDelay != DefaultRebootDelay {
		t.Errorf("defaults: %+v", p)
	}
	if len(p.Images) != 1 || p.Images[0].Digest.String() != digestA || p.Images[0].Insecure {
		t.Errorf("images %+v", p.Images)
	}
	if got := p.rootFSTypes(""); !reflect.DeepEqual(got, []string{"ext4", "xfs", "btrfs"}) {
		t.Errorf("fs types to try %v", got)
	}
	if got := p.rootFSTypes("xfs"); !reflect.DeepEqual(got, []string{"xfs", "ext4", "btrfs"}) {
		t.Errorf("fs types to try after probing xfs %v", got)
	}
}

func TestPlanOptions(t *testing.T) {
	tests := []struct {
		cmdline string
		check   func(*Plan) string
	}{
		{"ro", func(p *Plan) string { return want(p.ReadOnly, "ro") }},
		{"ro rw", func(p *Plan) string { return want(!p.ReadOnly, "rw after ro") }},
		{"rw ro", func(p *Plan) string { return want(p.ReadOnly, "ro after rw") }},
		{"ro -- rw", func(p *Plan) string { return want(p.ReadOnly, "rw after -- is init's") }},
		{"rootwait", func(p *Plan) string {
			return want(p.RootWait && p.RootTimeout == RootWaitTimeout, "rootwait waits 60s")
		}},
		{"rootwait=5", func(p *Plan) string { return want(p.RootTimeout == 5*time.Second, "rootwait=5") }},
		{"rootdelay=2", func(p *Plan) string { return want(p.RootDelay == 2*time.Second, "rootdelay") }},
		{"root=UUID=0a1b2c3d-0000-4000-8000-000000000001", func(p *Plan) string {
			return want(p.Root.Kind == bootcfg.RootUUID && p.Root.Value == "0a1b2c3d-0000-4000-8000-000000000001", "UUID=")
		}},
		{`"root=LABEL=my root"`, func(p *Plan) string {
			return want(p.Root.Kind == bootcfg.RootLabel && p.Root.Value == "my root", "quoted LABEL=")
		}},
		{"root=PARTLABEL=cfs-root", func(p *Plan) string { return want(p.Root.Kind == bootcfg.RootPartLabel, "PARTLABEL=") }},
		{"root=PARTUUID=12345678-01", func(p *Plan) string { return want(p.Root.Kind == bootcfg.RootPartUUID, "PARTUUID=") }},
		{"rootfstype=xfs,ext4 rootflags=noatime,discard", func(p *Plan) string {
			return want(reflect.DeepEqual(p.FSTypes, []string{"xfs", "ext4"}) && p.RootFlags == "noatime,discard" &&
				reflect.DeepEqual(p.rootFSTypes("btrfs"), []string{"xfs", "ext4"}), "rootfstype list is used as given")
		}},
		{"init=/usr/lib/systemd/systemd", func(p *Plan) string { return want(p.Init == "/usr/lib/systemd/systemd", "init=") }},
		{"cfs.debug cfs.emergency=1 cfs.reboot-delay=0", func(p *Plan) string {
			return want(p.Debug && p.Emergency && p.RebootDelay == 0, "cfs options")
		}},
		{"cfs.debug=0 cfs.frobnicate", func(p *Plan) string {
			return want(!p.Debug && reflect.DeepEqual(p.Unknown, []string{"cfs.frobnicate"}), "unknown cfs option")
		}},
		{`ext4.foo=bar ext4.baz virtio-blk.queue_depth=4 "erofs.x=a b"`, func(p *Plan) string {
			return want(reflect.DeepEqual(p.ModuleParams, map[string]string{
				"ext4": "foo=bar baz", "virtio_blk": "queue_depth=4", "erofs": `x="a b"`,
			}), "module parameters")
		}},
	}
	for _, tt := range tests {
		p, err := NewPlan("composefs=" + digestA + " " + tt.cmdline)
		if err != nil {
			t.Errorf("%q: %v", tt.cmdline, err)
			continue
		}
		if msg := tt.check(p); msg != "" {
			t.Errorf("%q: %s; plan %+v", tt.cmdline, msg, p)
		}
	}
}

func want(ok bool, what string) string {
	if ok {
		return ""
	}
	return "wrong: " + what
}

func TestPlanImagesInOrder(t *testing.T) {
	p, err := NewPlan("root=/dev/vda composefs=" + digestA + " composefs.digest=?v1-sha256-12:" + strings.ToUpper(digestB) +
		" composefs=?" + digestC + " -- composefs=" + digestA)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range p.Images {
		s := r.Digest.String()
		if r.Insecure {
			s = "?" + s
		}
		got = append(got, s)
	}
	if want := []string{digestA, "?" + digestB, "?" + digestC}; !reflect.DeepEqual(got, want) {
		t.Errorf("images %v, want %v (the arguments after -- are init's)", got, want)
	}
}

func TestPlanErrors(t *testing.T) {
	tests := []struct{ cmdline, want string }{
		{"root=/dev/vda", "names no composefs image"},
		{"root=/dev/vda -- composefs=" + digestA, "names no composefs image"},
		{"composefs=abc", "composefs=abc"},
		{"composefs=" + digestA + " composefs=" + digestA[:63] + "g", "composefs="},
		{"composefs.digest=v1-sha512-12:" + digestA, "composefs.digest"},
		{"composefs=" + digestA + " root=foo", "root=foo"},
		{"composefs=" + digestA + " init=sbin/init", "absolute"},
		{"composefs=" + digestA + " cfs.reboot-delay=soon", "cfs.reboot-delay=soon"},
		{"composefs=" + digestA + " cfs.debug=maybe", "cfs.debug=maybe"},
		{"composefs=" + digestA + " rootwait=forever", "rootwait=forever"},
	}
	for _, tt := range tests {
		_, err := NewPlan(tt.cmdline)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want one mentioning %q", tt.cmdline, err, tt.want)
		}
	}
}

func TestFailurePlan(t *testing.T) {
	p := failurePlan("composefs=broken cfs.emergency cfs.reboot-delay=30")
	if !p.Emergency || p.RebootDelay != 30*time.Second {
		t.Errorf("%+v", p)
	}
	p = failurePlan("composefs=broken cfs.emergency=0 cfs.reboot-delay=soon")
	if p.Emergency || p.RebootDelay != DefaultRebootDelay {
		t.Errorf("%+v", p)
	}
}
