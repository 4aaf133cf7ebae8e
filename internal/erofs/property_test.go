package erofs

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	propSeeds = flag.Int("property.seeds", 0, "number of seeds for TestPropertyRoundTrip (default 200, 30 with -short)")
	propSeed  = flag.Uint64("property.seed", 0, "run TestPropertyRoundTrip for this seed only")
	propKeep  = flag.String("property.keep", "", "write the generated dump and image of every seed into this directory")
	// An upstream mkcomposefs binary, if given, must write the same image
	// from every generated dump (env CFS_UPSTREAM_MKCOMPOSEFS works too).
	propUpstream = flag.String("property.upstream", os.Getenv("CFS_UPSTREAM_MKCOMPOSEFS"), "path of an upstream mkcomposefs to compare images with")
)

// propFsckSeeds is how many seeds also run fsck.erofs on their images.
const propFsckSeeds = 50

// TestPropertyRoundTrip checks, for random trees from genDump, that
//
//	dump → ParseDump → Write → ReadImage → Write
//
// and
//
//	dump → ParseDump → Write → ReadImage → WriteDump → ParseDump → Write
//
// both reproduce the first image byte for byte (later writes pinned to the
// version the reader reports), as upstream's composefs-dump and
// composefs-info dump | mkcomposefs round trips require. The first seeds
// also run fsck.erofs on the image when it is installed.
//
// A failing seed's dump is saved to a file whose path the failure names;
// rerun one seed with -property.seed=N.
func TestPropertyRoundTrip(t *testing.T) {
	fsck, _ := exec.LookPath("fsck.erofs")
	if fsck == "" {
		t.Log("fsck.erofs not installed: images are not checked with it")
	}
	first, last := uint64(1), uint64(200)
	if testing.Short() {
		last = 30
	}
	if *propSeeds > 0 {
		last = uint64(*propSeeds)
	}
	if *propSeed != 0 {
		first, last = *propSeed, *propSeed
	}
	start := time.Now()
	var stats propStats
	for seed := first; seed <= last; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			useFsck := ""
			if seed <= propFsckSeeds {
				useFsck = fsck
			}
			s := propCheckSeed(t, seed, useFsck)
			stats.add(s)
		})
	}
	t.Cleanup(func() {
		t.Logf("%d seeds in %v: %s", last-first+1, time.Since(start).Round(time.Millisecond), stats.String())
	})
}

// propStats sums what the seeds covered, to show the generator reaches
// the corners it is meant to.
type propStats struct {
	mu                                                    sync.Mutex
	entries, links, whiteouts, v1, bigDirs, fsck, extInos int
	upstream                                              int
	imageBytes                                            int64
}

func (s *propStats) add(o *propStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries += o.entries
	s.links += o.links
	s.whiteouts += o.whiteouts
	s.v1 += o.v1
	s.bigDirs += o.bigDirs
	s.fsck += o.fsck
	s.extInos += o.extInos
	s.imageBytes += o.imageBytes
	s.upstream += o.upstream
}

func (s *propStats) String() string {
	return fmt.Sprintf("%d entries, %d hard links, %d whiteouts, %d v1 images, %d directories over one block, %d extended inodes, %d image bytes, %d fsck.erofs runs, %d upstream comparisons",
		s.entries, s.links, s.whiteouts, s.v1, s.bigDirs, s.extInos, s.imageBytes, s.fsck, s.upstream)
}

// propCheckSeed runs the property for one seed.
func propCheckSeed(t *testing.T, seed uint64, fsck string) *propStats {
	dump, cfg := genDump(seed)
	if again, _ := genDump(seed); !bytes.Equal(dump, again) {
		t.Fatalf("seed %d: generator is not deterministic", seed)
	}
	if *propKeep != "" {
		p := filepath.Join(*propKeep, fmt.Sprintf("seed-%d.dump", seed))
		if err := os.WriteFile(p, dump, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st := &propStats{}
	fail := func(format string, args ...any) {
		t.Helper()
		path := propSaveDump(t, seed, dump)
		t.Fatalf("seed %d (%d lines, options %+v, shuffled %v): %s\ngenerated dump saved to %s\nrerun: go test ./internal/erofs -run 'TestPropertyRoundTrip' -property.seed=%d -v",
			seed, genLines(dump), cfg.Opts, cfg.Shuffled, fmt.Sprintf(format, args...), path, seed)
	}

	root1, err := ParseDump(bytes.NewReader(dump), DumpOptions{Strict: true})
	if err != nil {
		fail("generated dump does not parse: %v", err)
	}
	wantVersion, err := chooseVersion(root1, cfg.Opts)
	if err != nil {
		fail("ImageVersion: %v", err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, root1, cfg.Opts); err != nil {
		fail("write: %v", err)
	}
	img1 := bytes.Clone(buf.Bytes())

	if *propKeep != "" {
		p := filepath.Join(*propKeep, fmt.Sprintf("seed-%d.cfs", seed))
		if err := os.WriteFile(p, img1, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	im, err := ReadImage(img1)
	if err != nil {
		fail("reading the image back: %v", err)
	}
	if im.Version != wantVersion {
		fail("image has version %d, ImageVersion said %d", im.Version, wantVersion)
	}
	pin := WriteOptions{MinVersion: im.Version, MaxVersion: im.Version}

	// Image → tree → image.
	buf.Reset()
	if err := Write(&buf, im.Root, pin); err != nil {
		fail("rewriting the tree read from the image: %v", err)
	}
	if d := propDiff(img1, buf.Bytes()); d != "" {
		fail("Write(ReadImage(img)) differs from img: %s%s", d, propDumpDiff(im.Root, buf.Bytes()))
	}

	// Image → dump → tree → image.
	var text bytes.Buffer
	if err := WriteDump(&text, im.Root, DumpPrintOptions{}); err != nil {
		fail("WriteDump: %v", err)
	}
	root2, err := ParseDump(bytes.NewReader(text.Bytes()), DumpOptions{Strict: true})
	if err != nil {
		fail("the dump printed from the image does not parse: %v", err)
	}
	buf.Reset()
	if err := Write(&buf, root2, pin); err != nil {
		fail("writing the reparsed dump: %v", err)
	}
	if d := propDiff(img1, buf.Bytes()); d != "" {
		fail("Write(ParseDump(WriteDump(ReadImage(img)))) differs from img: %s%s", d, propDumpDiff(im.Root, buf.Bytes()))
	}

	if *propUpstream != "" {
		dir := t.TempDir()
		in, out := filepath.Join(dir, "in.dump"), filepath.Join(dir, "upstream.cfs")
		if err := os.WriteFile(in, dump, 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"--from-file"}
		if cfg.Opts != DefaultWriteOptions {
			args = append(args, fmt.Sprintf("--min-version=%d", cfg.Opts.MinVersion), fmt.Sprintf("--max-version=%d", cfg.Opts.MaxVersion))
		}
		cmd := exec.Command(*propUpstream, append(args, in, out)...)
		cmd.Env = append(os.Environ(), "CFS_PARSE_STRICT=1")
		if msg, err := cmd.CombinedOutput(); err != nil {
			fail("upstream mkcomposefs %v: %v\n%s", args, err, msg)
		}
		up, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if d := propDiff(up, img1); d != "" {
			fail("image differs from upstream mkcomposefs's (want = upstream): %s", d)
		}
		st.upstream++
	}

	if fsck != "" {
		path := filepath.Join(t.TempDir(), "image.cfs")
		if err := os.WriteFile(path, img1, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(fsck, path).CombinedOutput()
		if err != nil {
			fail("fsck.erofs: %v\n%s", err, out)
		}
		st.fsck++
	}

	st.imageBytes = int64(len(img1))
	if im.Version == 1 {
		st.v1++
	}
	_ = Walk(root1, func(n *Node) error {
		st.entries++
		switch {
		case n.LinkTo != nil:
			st.links++
		case n.IsWhiteout():
			st.whiteouts++
		case n.IsDir() && len(n.Children) > 200:
			st.bigDirs++
		}
		return nil
	})
	st.extInos = propCountExtended(root1)
	return st
}

// propCountExtended counts the entries that need an extended inode by the
// writer's rule (mtime not the image minimum, ids or nlink over 16 bits,
// size over 32 bits), for the coverage summary.
func propCountExtended(root *Node) int {
	minT := root.Mtime
	_ = Walk(root, func(n *Node) error {
		if n.LinkTo == nil && n.Mtime.Less(minT) {
			minT = n.Mtime
		}
		return nil
	})
	count := 0
	_ = Walk(root, func(n *Node) error {
		if n.LinkTo != nil {
			return nil
		}
		big := n.UID > 65535 || n.GID > 65535 || (!n.IsDir() && n.Nlink > 65535)
		if n.Mtime != minT || big || (!n.IsDir() && !n.IsWhiteout() && n.Size > 1<<32-1) {
			count++
		}
		return nil
	})
	return count
}

// propSaveDump saves a failing dump where it outlives the test.
func propSaveDump(t *testing.T, seed uint64, dump []byte) string {
	dir := *propKeep
	if dir == "" {
		var err error
		dir, err = os.MkdirTemp("", "erofs-property-")
		if err != nil {
			return fmt.Sprintf("(not saved: %v)", err)
		}
	}
	path := filepath.Join(dir, fmt.Sprintf("seed-%d.dump", seed))
	if err := os.WriteFile(path, dump, 0o644); err != nil {
		return fmt.Sprintf("(not saved: %v)", err)
	}
	return path
}

// propDiff describes the first difference between two images, "" if
// there is none.
func propDiff(want, got []byte) string {
	if bytes.Equal(want, got) {
		return ""
	}
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	where := propRegion(want, i)
	lo := max(i-16, 0)
	return fmt.Sprintf("sizes %d vs %d; first difference at byte %d (%s)\n want % x\n got  % x",
		len(want), len(got), i, where, want[lo:min(i+32, len(want))], got[lo:min(i+32, len(got))])
}

// propRegion names the part of an image an offset falls in.
func propRegion(img []byte, off int) string {
	switch {
	case off < composefsHeaderSize:
		return fmt.Sprintf("composefs header +%d", off)
	case off < SuperblockOffset:
		return "header padding"
	case off < SuperblockOffset+superblockSize:
		return fmt.Sprintf("superblock +%d", off-SuperblockOffset)
	}
	if len(img) >= SuperblockOffset+superblockSize {
		sb := img[SuperblockOffset:]
		xattrStart := int(le.Uint32(sb[sbXattrBlkaddr:])) * BlockSize
		if off >= xattrStart && off < xattrStart+BlockSize*4 && off >= inodeTableStart {
			return fmt.Sprintf("inode table or shared xattrs, nid slot %d (+%d)", off/32, off%32)
		}
	}
	return fmt.Sprintf("nid slot %d (+%d) / block %d (+%d)", off/32, off%32, off/BlockSize, off%BlockSize)
}

// propDumpDiff prints the first line where the dump of the tree read from
// the first image differs from that of the rewritten image.
func propDumpDiff(root *Node, img2 []byte) string {
	im2, err := ReadImage(img2)
	if err != nil {
		return fmt.Sprintf("\n(rewritten image does not read back: %v)", err)
	}
	var a, b bytes.Buffer
	if WriteDump(&a, root, DumpPrintOptions{}) != nil || WriteDump(&b, im2.Root, DumpPrintOptions{}) != nil {
		return ""
	}
	la, lb := strings.Split(a.String(), "\n"), strings.Split(b.String(), "\n")
	for i := 0; i < len(la) || i < len(lb); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			return fmt.Sprintf("\nfirst differing dump line %d:\n from image 1: %.300s\n from image 2: %.300s", i+1, x, y)
		}
	}
	return "\n(the dumps of both images are equal)"
}

// TestPropertyGeneratorCoverage checks that the generator produces the
// features the property is meant to exercise, over the seeds the property
// test uses with -short.
func TestPropertyGeneratorCoverage(t *testing.T) {
	want := map[string]bool{}
	for seed := uint64(1); seed <= 30; seed++ {
		dump, cfg := genDump(seed)
		root, err := ParseDump(bytes.NewReader(dump), DumpOptions{Strict: true})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if cfg.Shuffled {
			want["shuffled"] = true
		}
		_ = Walk(root, func(n *Node) error {
			if n.LinkTo != nil {
				want["hardlink"] = true
				return nil
			}
			if len(n.Name) == MaxNameLen {
				want["name255"] = true
			}
			if strings.ContainsAny(n.Name, " =\\") {
				want["oddname"] = true
			}
			for i := 0; i < len(n.Name); i++ {
				if n.Name[i] >= 0x80 {
					want["highbyte"] = true
				}
			}
			switch {
			case n.IsWhiteout():
				want["whiteout"] = true
			case n.IsDir() && len(n.Children) > 200:
				want["bigdir"] = true
			case n.IsExternal() && n.Digest.IsZero():
				want["nodigest"] = true
			case n.IsExternal() && n.Size > 1<<32:
				want["huge"] = true
			case n.IsRegular() && len(n.Content) > 4096:
				want["bigcontent"] = true
			case n.IsSymlink() && len(n.Payload) > 4000:
				want["longlink"] = true
			case n.Type() == ModeBlk, n.Type() == ModeFifo, n.Type() == ModeSock:
				want[fmt.Sprintf("type%o", n.Type())] = true
			}
			if n.Mtime.Sec < 0 {
				want["negtime"] = true
			}
			if n.UID > 65535 || n.GID > 65535 {
				want["bigid"] = true
			}
			for _, x := range n.Xattrs {
				switch {
				case strings.HasPrefix(x.Key, "trusted.overlay."):
					want["xoverlay"] = true
				case strings.HasPrefix(x.Key, "system.posix_acl_"):
					want["xacl"] = true
				case strings.HasPrefix(x.Key, "security."):
					want["xsecurity"] = true
				}
				if strings.IndexByte(x.Value, 0) >= 0 {
					want["xbinary"] = true
				}
			}
			if len(n.Xattrs) > 128 {
				want["manyxattrs"] = true
			}
			return nil
		})
	}
	for _, k := range []string{"shuffled", "hardlink", "name255", "oddname", "highbyte", "whiteout", "bigdir",
		"nodigest", "huge", "bigcontent", "longlink", "type60000", "type10000", "type140000", "negtime", "bigid",
		"xoverlay", "xacl", "xsecurity", "xbinary", "manyxattrs"} {
		if !want[k] {
			t.Errorf("no seed in 1..30 generates %s", k)
		}
	}
}

// TestPropertyRdevTruncatedWhiteout: upstream keeps st_rdev in a 32-bit
// field (struct lcfs_inode_s, lcfs-internal.h), so a character device whose
// RDEV has only bits above 32 set (here 2^32) is stored as 0/0 as soon as
// it is parsed, and every later whiteout check (version auto-bump,
// escaping) sees a whiteout. The image must therefore equal the one for
// RDEV 0. Found with the property generator's device numbers.
func TestPropertyRdevTruncatedWhiteout(t *testing.T) {
	const head = "/ 4096 40755 2 0 0 0 0.0 - - -\n/d 4096 40755 2 0 0 0 0.0 - - -\n"
	write := func(rdev string) ([]byte, int) {
		root, err := ParseDump(strings.NewReader(head+"/d/w 0 20644 1 0 0 "+rdev+" 0.0 - - -\n"), DumpOptions{Strict: true})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := Write(&b, root, DefaultWriteOptions); err != nil {
			t.Fatal(err)
		}
		v, err := chooseVersion(root, DefaultWriteOptions)
		if err != nil {
			t.Fatal(err)
		}
		return b.Bytes(), v
	}
	want, wantV := write("0")
	got, gotV := write("4294967296")
	if gotV != wantV {
		t.Errorf("ImageVersion with RDEV 2^32 = %d, want %d (as for RDEV 0: a whiteout)", gotV, wantV)
	}
	if d := propDiff(want, got); d != "" {
		t.Errorf("image with RDEV 2^32 differs from the one with RDEV 0: %s", d)
	}
	if im, err := ReadImage(got); err == nil {
		if _, err := Resolve(im.Root, "/d/w"); err != nil {
			t.Errorf("/d/w is lost when the image is read back: %v", err)
		}
	}
}
