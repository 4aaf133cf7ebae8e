package bootcfg

import (
	"maps"
	"strings"
	"testing"
	"time"
)

func TestParseBootOptionsDefaults(t *testing.T) {
	o, err := ParseBootOptions(ParseCmdline("quiet"))
	if err != nil {
		t.Fatal(err)
	}
	if !o.ReadOnly || o.Init != "/sbin/init" || o.Root.Kind != "" || o.RootWait ||
		o.RootDelay != 0 || o.RootFSType != "" || o.RootFlags != "" || len(o.Images) != 0 || len(o.CFS) != 0 {
		t.Errorf("defaults = %+v", o)
	}
}

func TestParseBootOptions(t *testing.T) {
	line := `root=UUID=abcd rootfstype=ext4,xfs rootflags="data=ordered,noatime" rootwait rootdelay=3 ` +
		`rw init=/usr/lib/systemd/systemd cfs.debug cfs.etc=transient cfs.etc=persistent ` +
		"composefs=?" + hexA + " -- ro init=/bin/false cfs.emergency"
	o, err := ParseBootOptions(ParseCmdline(line))
	if err != nil {
		t.Fatal(err)
	}
	if o.Root != (RootSpec{RootUUID, "abcd"}) {
		t.Errorf("Root = %+v", o.Root)
	}
	if o.RootFSType != "ext4,xfs" || o.RootFlags != "data=ordered,noatime" {
		t.Errorf("RootFSType %q RootFlags %q", o.RootFSType, o.RootFlags)
	}
	if !o.RootWait || o.RootWaitTimeout != 0 || o.RootDelay != 3*time.Second {
		t.Errorf("RootWait %v %v RootDelay %v", o.RootWait, o.RootWaitTimeout, o.RootDelay)
	}
	// "ro" after "--" is for init, so rw stands.
	if o.ReadOnly {
		t.Errorf("ReadOnly after rw")
	}
	if o.Init != "/usr/lib/systemd/systemd" {
		t.Errorf("Init = %q", o.Init)
	}
	if want := map[string]string{"debug": "", "etc": "persistent"}; !maps.Equal(o.CFS, want) {
		t.Errorf("CFS = %v, want %v", o.CFS, want)
	}
	if len(o.Images) != 1 || !o.Images[0].Insecure || o.Images[0].Digest.String() != hexA {
		t.Errorf("Images = %+v", o.Images)
	}
}

func TestParseBootOptionsLastWins(t *testing.T) {
	tests := []struct {
		line     string
		readOnly bool
		root     string
	}{
		{"rw ro", true, ""},
		{"ro rw", false, ""},
		// Only the bare words count, as in the kernel.
		{"rw ro=1", false, ""},
		{"root=/dev/sda root=LABEL=x", true, "LABEL=x"},
		// Only the last root= matters, so an earlier bad one is harmless.
		{"root=bogus root=/dev/vda", true, "/dev/vda"},
		// A bare "root" is not root=, for the kernel either.
		{"root=/dev/vda root", true, "/dev/vda"},
	}
	for _, tt := range tests {
		o, err := ParseBootOptions(ParseCmdline(tt.line))
		if err != nil {
			t.Errorf("%q: %v", tt.line, err)
			continue
		}
		if o.ReadOnly != tt.readOnly {
			t.Errorf("%q: ReadOnly = %v", tt.line, o.ReadOnly)
		}
		if tt.root != "" && o.Root.String() != tt.root {
			t.Errorf("%q: Root = %v", tt.line, o.Root)
		}
	}
}

func TestParseBootOptionsRootWaitTimeout(t *testing.T) {
	o, err := ParseBootOptions(ParseCmdline("rootwait=30"))
	if err != nil {
		t.Fatal(err)
	}
	if !o.RootWait || o.RootWaitTimeout != 30*time.Second {
		t.Errorf("rootwait=30 gave %v %v", o.RootWait, o.RootWaitTimeout)
	}
	// A later bare rootwait waits for ever again.
	o, err = ParseBootOptions(ParseCmdline("rootwait=30 rootwait"))
	if err != nil {
		t.Fatal(err)
	}
	if !o.RootWait || o.RootWaitTimeout != 0 {
		t.Errorf("rootwait=30 rootwait gave %v %v", o.RootWait, o.RootWaitTimeout)
	}
}

func TestParseBootOptionsErrors(t *testing.T) {
	tests := []struct{ line, want string }{
		{"root=sda1", "root=sda1"},
		{"root=", "empty device"},
		{"rootdelay=x", "rootdelay=x: want a whole number of seconds"},
		{"rootdelay=-1", "rootdelay=-1"},
		{"rootwait=1.5", "rootwait=1.5"},
		{"init=", "init=: empty path"},
		{"cfs.=1", "no option name"},
		{"composefs=xyz", `"composefs=xyz"`},
	}
	for _, tt := range tests {
		_, err := ParseBootOptions(ParseCmdline(tt.line))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want one saying %q", tt.line, err, tt.want)
		}
	}
}

func TestCFSFlag(t *testing.T) {
	o, err := ParseBootOptions(ParseCmdline("cfs.a cfs.b=1 cfs.c=no cfs.d=Off cfs.e=maybe cfs.f=YES"))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"a": true, "b": true, "c": false, "d": false, "f": true, "missing": false} {
		got, err := o.CFSFlag(name)
		if err != nil || got != want {
			t.Errorf("CFSFlag(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	if _, err := o.CFSFlag("e"); err == nil {
		t.Errorf("CFSFlag(e) accepted %q", o.CFS["e"])
	}
}
