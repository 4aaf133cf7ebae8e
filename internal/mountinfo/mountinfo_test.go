package mountinfo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseLine(t *testing.T) {
	e, ok := ParseLine(`36 35 8:3 / /mnt/a\040b rw,noatime master:1 shared:2 - ext4 /dev/sda3 rw,errors=continue`)
	want := Entry{Major: 8, Minor: 3, MountPoint: "/mnt/a b", FSType: "ext4", Source: "/dev/sda3"}
	if !ok || e != want {
		t.Fatalf("got %+v %v, want %+v", e, ok, want)
	}
	for _, bad := range []string{"", "36 35 8:3 / /mnt rw", "36 35 x / /mnt rw - ext4 /dev/x rw", "36 35 8:3 / /mnt rw -"} {
		if _, ok := ParseLine(bad); ok {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a\040b\134`: `/a b\`, `plain`: `plain`, `/x\04`: `/x\04`, `\011tab`: "\ttab"} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(p, []byte("1 0 0:1 / / rw - rootfs rootfs rw\ngarbage\n2 1 0:22 / /proc rw - proc proc rw\n"), 0o644)
	es, err := Read(p)
	if err != nil || len(es) != 2 || es[1].MountPoint != "/proc" {
		t.Fatalf("Read: %+v %v", es, err)
	}
}
