package bootcfg

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

const sampleEntry = `# Written by hand
title Fedora Linux 40 (Workstation Edition)
version 6.12.10-200.fc40.x86_64
machine-id 0123456789abcdef0123456789abcdef
sort-key fedora

linux /0123456789abcdef0123456789abcdef/6.12.10/linux
initrd /0123456789abcdef0123456789abcdef/6.12.10/microcode
initrd	/0123456789abcdef0123456789abcdef/6.12.10/initrd
options root=UUID=abcd ro
options   quiet composefs=` + hexA + `
grub_users $grub_users
x-custom   value with  inner  spaces   
grub_class fedora
   devicetree /dtb/board.dtb
architecture x64
efi /EFI/fedora/shim.efi
nokey
`

func TestParseEntry(t *testing.T) {
	e, err := ParseEntry(strings.NewReader(sampleEntry))
	if err != nil {
		t.Fatal(err)
	}
	want := &Entry{
		Title:        "Fedora Linux 40 (Workstation Edition)",
		Version:      "6.12.10-200.fc40.x86_64",
		MachineID:    "0123456789abcdef0123456789abcdef",
		SortKey:      "fedora",
		Linux:        "/0123456789abcdef0123456789abcdef/6.12.10/linux",
		Initrd:       []string{"/0123456789abcdef0123456789abcdef/6.12.10/microcode", "/0123456789abcdef0123456789abcdef/6.12.10/initrd"},
		EFI:          "/EFI/fedora/shim.efi",
		Options:      []string{"root=UUID=abcd ro", "quiet composefs=" + hexA},
		Devicetree:   "/dtb/board.dtb",
		Architecture: "x64",
		Extra: []Field{
			{"grub_users", "$grub_users"},
			{"x-custom", "value with  inner  spaces"},
			{"grub_class", "fedora"},
			{"nokey", ""},
		},
	}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("ParseEntry =\n%+v\nwant\n%+v", e, want)
	}
	c := e.Cmdline()
	if v, _ := c.Get("composefs"); v != hexA {
		t.Errorf("Cmdline composefs = %q", v)
	}
	if got := c.String(); got != "root=UUID=abcd ro quiet composefs="+hexA {
		t.Errorf("Cmdline = %q", got)
	}
}

func TestEntryMarshal(t *testing.T) {
	e, err := ParseEntry(strings.NewReader(sampleEntry))
	if err != nil {
		t.Fatal(err)
	}
	want := `title Fedora Linux 40 (Workstation Edition)
version 6.12.10-200.fc40.x86_64
machine-id 0123456789abcdef0123456789abcdef
sort-key fedora
options root=UUID=abcd ro
options quiet composefs=` + hexA + `
linux /0123456789abcdef0123456789abcdef/6.12.10/linux
initrd /0123456789abcdef0123456789abcdef/6.12.10/microcode
initrd /0123456789abcdef0123456789abcdef/6.12.10/initrd
efi /EFI/fedora/shim.efi
devicetree /dtb/board.dtb
architecture x64
grub_users $grub_users
x-custom value with  inner  spaces
grub_class fedora
nokey
`
	got := string(e.Marshal())
	if got != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", got, want)
	}
	// Parse, marshal, parse: the same entry and the same bytes.
	e2, err := ParseEntry(strings.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(e, e2) {
		t.Errorf("round trip changed the entry:\n%+v\n%+v", e, e2)
	}
	if again := string(e2.Marshal()); again != got {
		t.Errorf("second Marshal differs:\n%s", again)
	}
}

func TestParseEntryLineEnds(t *testing.T) {
	for _, in := range []string{
		"title T\r\nlinux /l\r\noptions a b\r\n",
		"title T\rlinux /l\roptions a b",
		"title T\n\nlinux /l\n\r\noptions a b\n",
		"\ttitle \t T \t\n  linux /l\noptions a b \r\n",
	} {
		e, err := ParseEntry(strings.NewReader(in))
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if e.Title != "T" || e.Linux != "/l" || !slices.Equal(e.Options, []string{"a b"}) {
			t.Errorf("%q: parsed %+v", in, e)
		}
	}
}

func TestParseEntryRules(t *testing.T) {
	// A repeated single key: the last one wins, as in systemd-boot.
	e, err := ParseEntry(strings.NewReader("title one\ntitle two\nlinux /a\nlinux /b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Title != "two" || e.Linux != "/b" {
		t.Errorf("repeated keys: %+v", e)
	}
	// Key-only options lines add nothing; comments need '#' first.
	e, err = ParseEntry(strings.NewReader("options\n  # indented comment\noptions a#b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.Options, []string{"a#b"}) || e.Extra != nil {
		t.Errorf("options/comments: %+v", e)
	}
	// Quotes are kept as written.
	e, err = ParseEntry(strings.NewReader(`title "Quoted"` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Title != `"Quoted"` {
		t.Errorf("title = %q", e.Title)
	}
	// Nothing at all is an empty entry.
	e, err = ParseEntry(strings.NewReader(""))
	if err != nil || !reflect.DeepEqual(e, &Entry{}) {
		t.Errorf("empty input: %+v, %v", e, err)
	}
}

func TestParseEntryErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"title\n", "line 1: title has no value"},
		{"title T\nlinux /a\ninitrd\n", "line 3: initrd has no value"},
		{"title T\r\n\r\nversion \t\r\n", "line 3: version has no value"},
		{"title T\n# c\nlinux /a\x00b\n", "line 3: NUL byte at column 9"},
		{"title T\ntitle \xff\xfe\n", "line 2: not valid UTF-8"},
		{"# \xff in a comment\n", "line 1: not valid UTF-8"},
		{strings.Repeat("x", maxEntrySize+1), "larger than"},
	}
	for _, tt := range tests {
		_, err := ParseEntry(strings.NewReader(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%.40q: error %v, want %q", tt.in, err, tt.want)
		}
	}
}

func TestEntrySetCmdline(t *testing.T) {
	e := &Entry{Options: []string{"root=/dev/sda", "quiet"}}
	c := e.Cmdline()
	if err := c.Replace("composefs", hexA); err != nil {
		t.Fatal(err)
	}
	c.Remove("quiet")
	e.SetCmdline(c)
	if !slices.Equal(e.Options, []string{"root=/dev/sda composefs=" + hexA}) {
		t.Errorf("Options = %q", e.Options)
	}
	e.SetCmdline(nil)
	if e.Options != nil {
		t.Errorf("Options after empty SetCmdline = %q", e.Options)
	}
}

func TestEntryValidate(t *testing.T) {
	good := func() *Entry {
		return &Entry{ID: "cfs-1", Title: "T", Linux: "/l", Initrd: []string{"/i"}, Options: []string{"ro"}}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("good entry: %v", err)
	}
	uki := &Entry{ID: "u", Extra: []Field{{"uki", "/EFI/Linux/x.efi"}}}
	if err := uki.Validate(); err != nil {
		t.Errorf("uki entry: %v", err)
	}
	tests := []struct {
		name string
		edit func(e *Entry)
		want string
	}{
		{"no ID", func(e *Entry) { e.ID = "" }, "empty boot entry ID"},
		{"bad ID", func(e *Entry) { e.ID = "a/b" }, `contains "/"`},
		{"nothing to boot", func(e *Entry) { e.Linux = "" }, "no linux, efi or uki"},
		{"newline", func(e *Entry) { e.Title = "a\nversion 2" }, "control character"},
		{"CR", func(e *Entry) { e.Options = []string{"a\rb"} }, "control character"},
		{"padded", func(e *Entry) { e.Version = " 1" }, "whitespace"},
		{"empty initrd", func(e *Entry) { e.Initrd = append(e.Initrd, "") }, "empty initrd"},
		{"bad utf8", func(e *Entry) { e.Title = "\xff" }, "UTF-8"},
		{"extra known key", func(e *Entry) { e.Extra = []Field{{"title", "x"}} }, "field of its own"},
		{"extra comment key", func(e *Entry) { e.Extra = []Field{{"#x", "y"}} }, "starts with '#'"},
		{"extra spaced key", func(e *Entry) { e.Extra = []Field{{"a b", "y"}} }, "without whitespace"},
		{"extra empty key", func(e *Entry) { e.Extra = []Field{{"", "y"}} }, "empty key"},
		{"negative counter", func(e *Entry) { e.Counter = &BootCounter{Left: -1} }, "negative"},
	}
	for _, tt := range tests {
		e := good()
		tt.edit(e)
		err := e.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}
