package kmod

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// fakeELF returns a minimal ELF64 relocatable object whose only content is a
// .modinfo section holding fields (each "key=value").
func fakeELF(t testing.TB, fields ...string) []byte {
	t.Helper()
	var modinfo []byte
	for _, f := range fields {
		modinfo = append(modinfo, f...)
		modinfo = append(modinfo, 0, 0) // padding NULs occur in real modules
	}
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const hdr = 64
	shoff := hdr + len(modinfo) + len(shstr)
	shoff = (shoff + 7) &^ 7
	h := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: 1,
		Shoff: uint64(shoff), Ehsize: hdr, Shentsize: 64, Shnum: 3, Shstrndx: 2,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, h)
	b.Write(modinfo)
	b.Write(shstr)
	for b.Len() < shoff {
		b.WriteByte(0)
	}
	secs := []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: hdr, Size: uint64(len(modinfo)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: uint64(hdr + len(modinfo)), Size: uint64(len(shstr)), Addralign: 1},
	}
	for _, s := range secs {
		binary.Write(&b, binary.LittleEndian, s)
	}
	return b.Bytes()
}

func compressAs(t testing.TB, data []byte, ext string) []byte {
	t.Helper()
	var b bytes.Buffer
	switch ext {
	case ".ko":
		return data
	case ".ko.xz":
		w, err := xz.WriterConfig{DictCap: 1 << 20, CheckSum: xz.CRC32}.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case ".ko.gz":
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	case ".ko.zst":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	default:
		t.Fatalf("bad ext %s", ext)
	}
	return b.Bytes()
}

func TestParseSoftdep(t *testing.T) {
	pre, post := ParseSoftdep("pre: a b-c post: d pre: e")
	if !reflect.DeepEqual(pre, []string{"a", "b-c", "e"}) || !reflect.DeepEqual(post, []string{"d"}) {
		t.Fatalf("pre %q post %q", pre, post)
	}
	pre, post = ParseSoftdep("junk pre:")
	if pre != nil || post != nil {
		t.Fatalf("pre %q post %q", pre, post)
	}
}

func TestReadModInfoFormats(t *testing.T) {
	elfData := fakeELF(t, "license=GPL", "softdep=pre: crypto-crc32c", "alias=fs-demo",
		"depends=jbd2,crc16,nvme-core", "alias=demo2", "name=my-demo", "vermagic=6.12.0 SMP")
	dir := t.TempDir()
	want := ModInfo{
		Name: "my_demo", Depends: []string{"jbd2", "crc16", "nvme_core"},
		SoftPre: []string{"crypto-crc32c"}, Aliases: []string{"fs-demo", "demo2"}, Vermagic: "6.12.0 SMP",
	}
	for _, ext := range []string{".ko", ".ko.xz", ".ko.gz", ".ko.zst"} {
		p := filepath.Join(dir, "my-demo"+ext)
		if err := os.WriteFile(p, compressAs(t, elfData, ext), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readModInfo(p)
		if err != nil {
			t.Fatalf("%s: %v", ext, err)
		}
		if got.Fields["license"][0] != "GPL" || len(got.Fields["alias"]) != 2 {
			t.Errorf("%s: fields %v", ext, got.Fields)
		}
		got.Fields = nil
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v\nwant %+v", ext, got, want)
		}
	}
}

func TestReadModInfoBad(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := map[string][]byte{
		"text.ko":      []byte("hello world, not a module"),
		"empty.ko":     nil,
		"truncated.ko": fakeELF(t, "name=x")[:80],
		"noinfo.ko":    bytes.Replace(fakeELF(t, "name=x"), []byte(".modinfo"), []byte(".nothing"), 1),
		"short.ko.xz":  []byte{0xfd, '7', 'z', 'X', 'Z', 0},
	}
	// An xz stream that claims a 4 GiB dictionary is refused before the
	// decoder allocates it. Byte 12+2+2 is the LZMA2 dictionary code when
	// the block header has no size fields.
	big := compressAs(t, fakeELF(t, "name=big"), ".ko.xz")
	if big[12+1]&0xc0 != 0 || big[12+2] != 0x21 || big[12+3] != 1 {
		t.Fatalf("unexpected xz block header % x", big[:20])
	}
	if d, err := xzDictSize(big[:64]); err != nil || d != 1<<20 {
		t.Fatalf("xzDictSize = %d, %v; want 1 MiB", d, err)
	}
	big[12+4] = 40
	cases["bigdict.ko.xz"] = big
	for name, data := range cases {
		if _, err := readModInfo(write(name, data)); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// synthTree writes a module tree. mods maps relative paths to .modinfo
// fields ("name=" is added from the file name).
func synthTree(t testing.TB, dir string, mods map[string][]string, builtin map[string][]string) {
	t.Helper()
	for rel, fields := range mods {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		base := filepath.Base(rel)
		name := strings.ReplaceAll(base[:strings.Index(base, ".ko")], "-", "_")
		data := compressAs(t, fakeELF(t, append([]string{"name=" + name}, fields...)...), base[strings.Index(base, ".ko"):])
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var bl, bm bytes.Buffer
	for rel, fields := range builtin {
		bl.WriteString(rel + "\n")
		name := strings.TrimSuffix(filepath.Base(rel), ".ko")
		for _, f := range fields {
			bm.WriteString(name + "." + f + "\x00")
		}
	}
	os.WriteFile(filepath.Join(dir, "modules.builtin"), bl.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.builtin.modinfo"), bm.Bytes(), 0o644)
}

var synthMods = map[string][]string{
	"kernel/fs/a.ko.xz":               {"depends=b,c"},
	"kernel/fs/b.ko.gz":               {"depends=c"},
	"kernel/lib/c.ko":                 {"depends="},
	"kernel/fs/d.ko.zst":              {"softdep=pre: crypto-foo post: c", "depends="},
	"kernel/crypto/foo_generic.ko":    {"alias=crypto-foo", "alias=foo"},
	"kernel/arch/foo-fast.ko.xz":      {"alias=crypto-foo", "alias=foo"},
	"kernel/fs/e.ko.xz":               {"depends=x-y"},
	"kernel/lib/x-y.ko.xz":            {},
	"kernel/fs/f.ko":                  {"softdep=pre: crypto-bar"},
	"kernel/fs/ext4/ext4.ko.xz":       {"depends=jbd2"}, // no softdep: the rule table adds crc32c
	"kernel/fs/jbd2/jbd2.ko.xz":       {},
	"kernel/crypto/crc32c_generic.ko": {"alias=crypto-crc32c", "alias=crc32c"},
	"kernel/fs/g.ko":                  {"depends=h"},
	"kernel/fs/h.ko":                  {"depends=g"},
	"kernel/fs/s.ko":                  {"softdep=pre: t"},
	"kernel/fs/t.ko":                  {"softdep=pre: s"},
	"kernel/fs/u.ko":                  {"softdep=pre: crypto-nothing"},
}

var synthBuiltin = map[string][]string{
	"kernel/crypto/bar_generic.ko": {"alias=crypto-bar"},
	"kernel/drivers/bi.ko":         {"license=GPL"},
}

// writeDepFiles writes what depmod would for the synthetic tree.
func writeDepFiles(t testing.TB, dir string) {
	t.Helper()
	dep := `kernel/fs/a.ko.xz: kernel/fs/b.ko.gz kernel/lib/c.ko
kernel/fs/b.ko.gz: kernel/lib/c.ko
kernel/lib/c.ko:
kernel/fs/d.ko.zst:
kernel/crypto/foo_generic.ko:
kernel/arch/foo-fast.ko.xz:
kernel/fs/e.ko.xz: kernel/lib/x-y.ko.xz
kernel/lib/x-y.ko.xz:
kernel/fs/f.ko:
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/crypto/crc32c_generic.ko:
kernel/fs/g.ko: kernel/fs/h.ko
kernel/fs/h.ko: kernel/fs/g.ko
kernel/fs/s.ko:
kernel/fs/t.ko:
kernel/fs/u.ko:
`
	soft := "# Soft dependencies extracted from modules themselves.\nsoftdep d pre: crypto-foo post: c\nsoftdep f pre: crypto-bar\nsoftdep s pre: t\nsoftdep t pre: s\nsoftdep u pre: crypto-nothing\n"
	alias := "# Aliases extracted from modules themselves.\nalias crypto-foo foo_generic\nalias foo foo_generic\nalias crypto-foo foo_fast\nalias foo foo_fast\nalias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\n"
	for name, s := range map[string]string{"modules.dep": dep, "modules.softdep": soft, "modules.alias": alias} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func names(mods []Module) []string {
	var s []string
	for _, m := range mods {
		s = append(s, m.Name)
	}
	return s
}

func TestResolveSynthetic(t *testing.T) {
	plain := t.TempDir()
	synthTree(t, plain, synthMods, synthBuiltin)
	withDep := t.TempDir()
	synthTree(t, withDep, synthMods, synthBuiltin)
	writeDepFiles(t, withDep)

	cases := []struct {
		want []string
		opt  []string
		out  []string
		err  string
	}{
		{want: []string{"a"}, out: []string{"c", "b", "a"}},
		{want: []string{"e"}, out: []string{"x_y", "e"}},
		{want: []string{"x-y", "c"}, out: []string{"x_y", "c"}},
		// Neither provider selected: the generic one is chosen.
		{want: []string{"d"}, out: []string{"foo_generic", "d"}},
		// A selected accelerated provider loads first, and the generic
		// one with it, in case the CPU cannot run the accelerated one.
		{want: []string{"d", "foo_fast"}, out: []string{"foo_fast", "foo_generic", "d"}},
		{want: []string{"foo_generic", "d"}, out: []string{"foo_generic", "d"}},
		{want: []string{"foo-fast", "foo_generic", "d"}, out: []string{"foo_fast", "foo_generic", "d"}},
		// Provided by a built-in module: nothing to add.
		{want: []string{"f"}, out: []string{"f"}},
		// Rule table: ext4 needs crc32c although its .modinfo does not say so.
		{want: []string{"ext4"}, out: []string{"crc32c_generic", "jbd2", "ext4"}},
		// Built-in modules are reported, not loaded.
		{want: []string{"bi", "c"}, out: []string{"c"}},
		// Order of the wanted names breaks ties.
		{want: []string{"c", "x_y"}, out: []string{"c", "x_y"}},
		{want: []string{"x_y", "a"}, out: []string{"x_y", "c", "b", "a"}},
		// A softdep cycle is broken deterministically.
		{want: []string{"s"}, out: []string{"t", "s"}},
		{want: []string{"u"}, out: []string{"u"}},
		{want: []string{"nosuch"}, err: "no module nosuch"},
		{want: []string{"nosuch", "c"}, opt: []string{"nosuch"}, out: []string{"c"}},
		{want: []string{"g"}, err: "cycle"},
	}
	for _, c := range cases {
		var results [][]Module
		for _, dir := range []string{plain, withDep} {
			res, err := resolveDir(dir, c.want, ResolveOptions{Optional: c.opt})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("%v in %s: error %v, want %q", c.want, dir, err, c.err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%v in %s: %v", c.want, dir, err)
				continue
			}
			if got := names(res.Modules); !reflect.DeepEqual(got, c.out) {
				t.Errorf("%v in %s: got %v, want %v (notes %v)", c.want, dir, got, c.out, res.Notes)
			}
			results = append(results, res.Modules)
		}
		if len(results) == 2 && !reflect.DeepEqual(results[0], results[1]) {
			t.Errorf("%v: modinfo and depmod files disagree:\n%+v\n%+v", c.want, results[0], results[1])
		}
	}

	res, err := resolveDir(plain, []string{"bi", "nosuch", "a", "u", "s"}, ResolveOptions{Optional: []string{"nosuch"}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Builtin, []string{"bi"}) || !reflect.DeepEqual(res.Missing, []string{"nosuch"}) {
		t.Errorf("builtin %v missing %v", res.Builtin, res.Missing)
	}
	notes := strings.Join(res.Notes, "\n")
	if !strings.Contains(notes, "crypto-nothing") || !strings.Contains(notes, "cycle") {
		t.Errorf("notes: %s", notes)
	}
	a := res.Modules[2]
	if a.Name != "a" || a.Path != "kernel/fs/a.ko.xz" || !reflect.DeepEqual(a.Deps, []string{"b", "c"}) {
		t.Errorf("module a: %+v", a)
	}
	var dep, list bytes.Buffer
	if err := WriteModulesDep(&dep, res.Modules); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dep.String(), "kernel/fs/a.ko.xz: kernel/fs/b.ko.gz kernel/lib/c.ko\n") {
		t.Errorf("modules.dep:\n%s", dep.String())
	}
	if err := WriteLoadList(&list, res.Modules); err != nil {
		t.Fatal(err)
	}
	if list.String() != "kernel/lib/c.ko\nkernel/fs/b.ko.gz\nkernel/fs/a.ko.xz\nkernel/fs/u.ko\nkernel/fs/t.ko\nkernel/fs/s.ko\n" {
		t.Errorf("load list:\n%s", list.String())
	}
	if err := WriteModulesDep(&dep, res.Modules[1:]); err == nil {
		t.Error("modules.dep with a missing dependency: no error")
	}
}

func TestResolveDuplicateNames(t *testing.T) {
	dir := t.TempDir()
	synthTree(t, dir, map[string][]string{
		"kernel/fs/z.ko.xz": {}, "updates/z.ko": {}, "extra/z.ko": {},
	}, nil)
	res, err := resolveDir(dir, []string{"z"}, ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Modules) != 1 || res.Modules[0].Path != "updates/z.ko" || len(res.Notes) != 2 {
		t.Fatalf("%+v notes %v", res.Modules, res.Notes)
	}
}

// resolveDir resolves in the module directory dir of the host, naming it
// in messages.
func resolveDir(dir string, want []string, opts ResolveOptions) (Result, error) {
	return resolveIn(os.DirFS(dir), ".", dir, want, opts)
}

// readModInfo reads the .modinfo of the module file at path.
func readModInfo(path string) (ModInfo, error) {
	return readModInfoFS(os.DirFS(filepath.Dir(path)), filepath.Base(path), path)
}
