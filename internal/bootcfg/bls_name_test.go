package bootcfg

import (
	"strings"
	"testing"
)

func TestParseEntryFileName(t *testing.T) {
	tests := []struct {
		name    string
		id      string
		counter *BootCounter
		ok      bool
	}{
		{"foo.conf", "foo", nil, true},
		{"foo+3.conf", "foo", &BootCounter{3, 0}, true},
		{"foo+0-5.conf", "foo", &BootCounter{0, 5}, true},
		{"foo+2-1.conf", "foo", &BootCounter{2, 1}, true},
		{"foo+3-0.conf", "foo", &BootCounter{3, 0}, true},
		{"foo+007.conf", "foo", &BootCounter{7, 0}, true},
		{"fedora-6.12+deb+1-2.conf", "fedora-6.12+deb", &BootCounter{1, 2}, true},
		{"FOO.CONF", "FOO", nil, true},
		{"foo+1.Conf", "foo", &BootCounter{1, 0}, true},
		// Not counters: they stay part of the ID.
		{"foo+.conf", "foo+", nil, true},
		{"foo+a.conf", "foo+a", nil, true},
		{"foo+3-.conf", "foo+3-", nil, true},
		{"foo+-3.conf", "foo+-3", nil, true},
		{"foo+3-1-2.conf", "foo+3-1-2", nil, true},
		{"foo+3x.conf", "foo+3x", nil, true},
		{"foo+3+bar.conf", "foo+3+bar", nil, true},
		{"foo+2147483648.conf", "foo+2147483648", nil, true},
		{"foo+2147483647.conf", "foo", &BootCounter{2147483647, 0}, true},
		{"foo+1-99999999999999999999.conf", "foo+1-99999999999999999999", nil, true},
		// Not entry files.
		{"foo.txt", "", nil, false},
		{".conf", "", nil, false},
		{"foo.conf.bak", "", nil, false},
	}
	for _, tt := range tests {
		id, c, ok := ParseEntryFileName(tt.name)
		if id != tt.id || ok != tt.ok || (c == nil) != (tt.counter == nil) || c != nil && *c != *tt.counter {
			t.Errorf("ParseEntryFileName(%q) = %q, %+v, %v; want %q, %+v, %v", tt.name, id, c, ok, tt.id, tt.counter, tt.ok)
		}
	}
}

func TestEntryFileName(t *testing.T) {
	tests := []struct {
		id      string
		counter *BootCounter
		want    string
	}{
		{"cfs-abc", nil, "cfs-abc.conf"},
		{"cfs-abc", &BootCounter{3, 0}, "cfs-abc+3.conf"},
		{"cfs-abc", &BootCounter{2, 1}, "cfs-abc+2-1.conf"},
		{"cfs-abc", &BootCounter{0, 3}, "cfs-abc+0-3.conf"},
	}
	for _, tt := range tests {
		e := &Entry{ID: tt.id, Counter: tt.counter}
		got := e.FileName()
		if got != tt.want {
			t.Errorf("FileName(%q, %+v) = %q, want %q", tt.id, tt.counter, got, tt.want)
		}
		id, c, ok := ParseEntryFileName(got)
		if !ok || id != tt.id || (c == nil) != (tt.counter == nil) || c != nil && *c != *tt.counter {
			t.Errorf("%q reads back as %q, %+v", got, id, c)
		}
	}
}

func TestCheckEntryID(t *testing.T) {
	for _, id := range []string{"cfs-0123abcd", "fedora_6.12.10-200.fc40", "a+b", "x@y,z~1^2", "foo+"} {
		if err := CheckEntryID(id); err != nil {
			t.Errorf("CheckEntryID(%q): %v", id, err)
		}
	}
	tests := []struct{ id, want string }{
		{"", "empty"},
		{".hidden", "starts with '.'"},
		{"auto-windows", "auto-"},
		{"AUTO-x", "auto-"},
		{"a/b", `contains "/"`},
		{"a b", `contains " "`},
		{"a:b", `contains ":"`},
		{"é", "contains"},
		{"foo+3", "boot counter"},
		{"foo+3-1", "boot counter"},
		{strings.Repeat("a", 201), "longer than 200"},
	}
	for _, tt := range tests {
		err := CheckEntryID(tt.id)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckEntryID(%.20q) = %v, want error saying %q", tt.id, err, tt.want)
		}
	}
}
