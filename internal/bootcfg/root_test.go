package bootcfg

import (
	"strings"
	"testing"
)

func TestParseRoot(t *testing.T) {
	tests := []struct {
		in   string
		want RootSpec
	}{
		{"/dev/vda2", RootSpec{RootPath, "/dev/vda2"}},
		{"/dev/disk/by-label/root", RootSpec{RootPath, "/dev/disk/by-label/root"}},
		{"UUID=0c2e6f0e-7e1f-4a34-9b77-2f1c4f0a6c11", RootSpec{RootUUID, "0c2e6f0e-7e1f-4a34-9b77-2f1c4f0a6c11"}},
		{"UUID=ABCD-1234", RootSpec{RootUUID, "ABCD-1234"}},
		{"LABEL=root", RootSpec{RootLabel, "root"}},
		{"LABEL=a=b", RootSpec{RootLabel, "a=b"}},
		{"PARTUUID=6b1c7ad1-02", RootSpec{RootPartUUID, "6b1c7ad1-02"}},
		{"PARTUUID=6b1c7ad1-01/PARTNROFF=1", RootSpec{RootPartUUID, "6b1c7ad1-01/PARTNROFF=1"}},
		{"PARTLABEL=root-x86-64", RootSpec{RootPartLabel, "root-x86-64"}},
	}
	for _, tt := range tests {
		got, err := ParseRoot(tt.in)
		if err != nil {
			t.Errorf("ParseRoot(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseRoot(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.in {
			t.Errorf("%+v.String() = %q, want %q", got, s, tt.in)
		}
	}
}

func TestParseRootErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "empty device"},
		{"UUID=", "empty UUID"},
		{"PARTLABEL=", "empty PARTLABEL"},
		{"uuid=abc", "not a device path"},
		{"sda1", "not a device path"},
		{"LABEL", "not a device path"},
		{"dev/sda1", "not a device path"},
	}
	for _, tt := range tests {
		_, err := ParseRoot(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseRoot(%q) error = %v, want one saying %q", tt.in, err, tt.want)
		}
	}
}
