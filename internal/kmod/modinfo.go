// Package kmod reads Linux kernel module metadata and computes which module
// files an initramfs needs and in which order to load them.
//
// It works on a module directory (<root>/usr/lib/modules/<kver>) as a
// distribution kernel package ships it: modules.dep, modules.alias and
// modules.softdep are used when depmod has written them, and computed from
// the modules' own .modinfo sections when it has not (Debian's kernel .deb
// ships none of them). The boot side, which only walks a precomputed list,
// is the subpackage load.
package kmod

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/cfs-deploy/cfs-deploy/internal/kmod/load"
)

// MaxModuleSize bounds the decompressed size of one module file. The largest
// modules of a distribution kernel are a few MiB.
const MaxModuleSize = 64 << 20

// ModInfo is the content of a module's .modinfo section.
type ModInfo struct {
	Name     string   // canonical name ('_', not '-')
	Depends  []string // canonical names of the modules whose symbols it uses
	SoftPre  []string // softdep "pre:" entries as written: module names or aliases
	SoftPost []string // softdep "post:" entries as written
	Aliases  []string // alias= entries (may be glob patterns)
	Vermagic string
	// Fields holds every key=value entry, including the ones above, in
	// section order per key.
	Fields map[string][]string
}

// readModInfoFS reads the .modinfo section of the module file name of
// fsys (plain ELF or compressed with xz, zstd or gzip, told by its first
// bytes); show names it in messages.
func readModInfoFS(fsys fs.FS, name, show string) (ModInfo, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return ModInfo{}, fmt.Errorf("%s: %w", show, unwrapPathError(err))
	}
	defer f.Close()
	data, err := readModule(f, show)
	if err != nil {
		return ModInfo{}, err
	}
	return modInfoOf(data, show)
}

func modInfoOf(data []byte, path string) (ModInfo, error) {
	mi, err := ParseModInfo(data)
	if err != nil {
		return ModInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	if mi.Name == "" {
		base, _ := load.TrimModuleExt(baseName(path))
		mi.Name = load.NormalizeName(base)
	}
	return mi, nil
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// readModule decompresses a module from f; path names it in messages.
func readModule(f io.Reader, path string) ([]byte, error) {
	br := bufio.NewReaderSize(io.LimitReader(f, MaxModuleSize), 64<<10)
	r, closeFn, err := decompressor(br)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer closeFn()
	data, err := io.ReadAll(io.LimitReader(r, MaxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: decompress: %w", path, err)
	}
	if len(data) > MaxModuleSize {
		return nil, fmt.Errorf("%s: module larger than %d bytes", path, MaxModuleSize)
	}
	return data, nil
}

var (
	magicXZ   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicGzip = []byte{0x1f, 0x8b}
	magicELF  = []byte{0x7f, 'E', 'L', 'F'}
)

// decompressor picks the decoder by magic number.
func decompressor(br *bufio.Reader) (io.Reader, func(), error) {
	head, _ := br.Peek(64)
	nop := func() {}
	switch {
	case bytes.HasPrefix(head, magicELF):
		return br, nop, nil
	case bytes.HasPrefix(head, magicXZ):
		dict, err := xzDictSize(head)
		if err != nil {
			return nil, nil, err
		}
		if dict > MaxModuleSize {
			return nil, nil, fmt.Errorf("xz dictionary of %d bytes is larger than any module", dict)
		}
		// DictCap is a lower bound: the decoder uses the stream's
		// dictionary size when it is larger, so asking for the minimum
		// keeps small modules from allocating the 8 MiB default.
		r, err := xz.ReaderConfig{DictCap: 4096, SingleStream: true}.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("xz: %w", err)
		}
		return r, nop, nil
	case bytes.HasPrefix(head, magicZstd):
		d, err := zstd.NewReader(br,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(MaxModuleSize),
			zstd.WithDecoderMaxWindow(MaxModuleSize))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return d, d.Close, nil
	case bytes.HasPrefix(head, magicGzip):
		z, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return z, func() { z.Close() }, nil
	}
	return nil, nil, errors.New("not a kernel module (neither ELF nor xz, zstd or gzip)")
}

// xzDictSize reads the LZMA2 dictionary size from the first block header of
// an xz stream (stream header: 12 bytes; block header: size, flags, optional
// sizes, then the filter flags, the last filter being LZMA2 with a one-byte
// dictionary code). It lets ReadModule refuse a stream that would make the
// decoder allocate an absurd dictionary.
func xzDictSize(head []byte) (int64, error) {
	bad := errors.New("xz: malformed block header")
	if len(head) < 14 {
		return 0, bad
	}
	p := head[12:]
	if p[0] == 0 { // index right away: empty stream
		return 0, nil
	}
	flags := p[1]
	p = p[2:]
	varint := func() (uint64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	if flags&0x40 != 0 {
		if _, ok := varint(); !ok {
			return 0, bad
		}
	}
	if flags&0x80 != 0 {
		if _, ok := varint(); !ok {
			return 0, bad
		}
	}
	var dict int64
	for i := 0; i <= int(flags&3); i++ {
		id, ok := varint()
		if !ok {
			return 0, bad
		}
		size, ok := varint()
		if !ok || size > uint64(len(p)) {
			return 0, bad
		}
		props := p[:size]
		p = p[size:]
		if id == 0x21 { // LZMA2
			if len(props) != 1 || props[0] > 40 {
				return 0, bad
			}
			d := props[0]
			if d == 40 {
				dict = 1<<32 - 1
			} else {
				dict = int64(2|d&1) << (d/2 + 11)
			}
		}
	}
	return dict, nil
}

// ParseModInfo reads the .modinfo section of a decompressed ELF module.
func ParseModInfo(elfData []byte) (ModInfo, error) {
	f, err := elf.NewFile(bytes.NewReader(elfData))
	if err != nil {
		return ModInfo{}, fmt.Errorf("ELF: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return ModInfo{}, errors.New("no .modinfo section")
	}
	if sec.Type == elf.SHT_NOBITS || sec.Size > uint64(len(elfData)) {
		return ModInfo{}, errors.New("bad .modinfo section")
	}
	raw, err := sec.Data()
	if err != nil {
		return ModInfo{}, fmt.Errorf(".modinfo: %w", err)
	}
	return parseModInfoSection(raw), nil
}

// parseModInfoSection splits NUL-separated key=value strings (padding NULs
// between them are skipped).
func parseModInfoSection(raw []byte) ModInfo {
	mi := ModInfo{Fields: make(map[string][]string)}
	for _, ent := range bytes.Split(raw, []byte{0}) {
		k, v, ok := strings.Cut(string(ent), "=")
		if !ok || k == "" {
			continue
		}
		mi.Fields[k] = append(mi.Fields[k], v)
		switch k {
		case "name":
			mi.Name = load.NormalizeName(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, load.NormalizeName(d))
				}
			}
		case "softdep":
			pre, post := ParseSoftdep(v)
			mi.SoftPre = append(mi.SoftPre, pre...)
			mi.SoftPost = append(mi.SoftPost, post...)
		case "alias":
			mi.Aliases = append(mi.Aliases, v)
		case "vermagic":
			mi.Vermagic = v
		}
	}
	return mi
}

// ParseSoftdep splits a softdep value such as "pre: a b post: c" into its
// pre and post lists. Words before the first "pre:" or "post:" are ignored.
func ParseSoftdep(v string) (pre, post []string) {
	var cur *[]string
	for _, w := range strings.Fields(v) {
		switch w {
		case "pre:":
			cur = &pre
		case "post:":
			cur = &post
		default:
			if cur != nil {
				*cur = append(*cur, w)
			}
		}
	}
	return pre, post
}
