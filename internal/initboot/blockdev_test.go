package initboot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/cfs-deploy/cfs-deploy/internal/mountinfo"

	"github.com/cfs-deploy/cfs-deploy/internal/blockdev/blockdevtest"
	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
)

// Test file systems and disks are built byte by byte from the layouts in
// probe.go and parttable.go, so that a wrong offset there fails here.

// guidBytes encodes a GUID the GPT way: the first three fields little
// endian.
func guidBytes(t *testing.T, s string) []byte {
	b := blockdevtest.UUID(t, s)
	b[0], b[1], b[2], b[3] = b[3], b[2], b[1], b[0]
	b[4], b[5] = b[5], b[4]
	b[6], b[7] = b[7], b[6]
	return b
}

type gptEntry struct {
	guid, name string // guid "" leaves the entry unused
}

// gptDisk returns a disk with a protective MBR, a GPT header in LBA 1 and
// the entries from LBA 2, with lbs-byte blocks.
func gptDisk(t *testing.T, lbs int, entries []gptEntry) []byte {
	const entrySize = 128
	b := make([]byte, 2*lbs+len(entries)*entrySize+4096)
	b[mbrBootSigOff], b[mbrBootSigOff+1] = 0x55, 0xAA
	b[mbrPartTypeOff] = mbrTypeGPT
	h := b[lbs:]
	copy(h, gptSignature)
	binary.LittleEndian.PutUint64(h[gptEntriesLBAOff:], 2)
	binary.LittleEndian.PutUint32(h[gptNumEntriesOff:], uint32(len(entries)))
	binary.LittleEndian.PutUint32(h[gptEntrySizeOff:], entrySize)
	for i, e := range entries {
		if e.guid == "" {
			continue
		}
		ent := b[2*lbs+i*entrySize:]
		copy(ent[gptEntryTypeOff:], guidBytes(t, "0fc63daf-8483-4772-8e79-3d69d8477de4")) // Linux data
		copy(ent[gptEntryGUIDOff:], guidBytes(t, e.guid))
		for j, c := range utf16.Encode([]rune(e.name)) {
			binary.LittleEndian.PutUint16(ent[gptEntryNameOff+2*j:], c)
		}
	}
	return b
}

func mbrDisk(sig uint32) []byte {
	b := make([]byte, 4096)
	binary.LittleEndian.PutUint32(b[mbrSignatureOff:], sig)
	b[mbrPartTypeOff] = 0x83
	b[mbrBootSigOff], b[mbrBootSigOff+1] = 0x55, 0xAA
	return b
}

func TestProbeFS(t *testing.T) {
	const u = "3f1c2b8e-1d2a-4c55-9e77-0123456789ab"
	tests := []struct {
		name string
		img  []byte
		want fsInfo
	}{
		{"ext4", blockdevtest.Ext4(t, u, "cfsroot"), fsInfo{Type: "ext4", UUID: u, Label: "cfsroot"}},
		{"ext4 full label", blockdevtest.Ext4(t, u, "0123456789abcdef"), fsInfo{Type: "ext4", UUID: u, Label: "0123456789abcdef"}},
		{"xfs", blockdevtest.XFS(t, u, "data"), fsInfo{Type: "xfs", UUID: u, Label: "data"}},
		{"btrfs", blockdevtest.Btrfs(t, u, "pool"), fsInfo{Type: "btrfs", UUID: u, Label: "pool"}},
		{"no uuid", blockdevtest.Ext4(t, "00000000-0000-0000-0000-000000000000", ""), fsInfo{Type: "ext4"}},
		{"zeros", make([]byte, 70000), fsInfo{}},
		{"short", []byte("XF"), fsInfo{}},
		{"empty", nil, fsInfo{}},
	}
	for _, tt := range tests {
		got, err := probeFS(bytes.NewReader(tt.img))
		if err != nil || got != tt.want {
			t.Errorf("%s: got %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
	}
}

func TestPartTable(t *testing.T) {
	for _, lbs := range []int{512, 4096} {
		disk := gptDisk(t, lbs, []gptEntry{
			{"11111111-2222-3333-4444-555555555555", "esp"},
			{},
			{"aabbccdd-eeff-0011-2233-445566778899", "cfs-root"},
		})
		pt, err := readPartTable(bytes.NewReader(disk), int64(lbs))
		if err != nil {
			t.Fatal(err)
		}
		if pt.Kind != "gpt" || len(pt.Entries) != 3 {
			t.Fatalf("lbs %d: %+v", lbs, pt)
		}
		if got := pt.partUUID(3); got != "aabbccdd-eeff-0011-2233-445566778899" {
			t.Errorf("lbs %d: partition 3 PARTUUID %q", lbs, got)
		}
		if got := pt.partName(1); got != "esp" {
			t.Errorf("lbs %d: partition 1 name %q", lbs, got)
		}
		if pt.partUUID(2) != "" || pt.partUUID(4) != "" || pt.partUUID(0) != "" {
			t.Errorf("lbs %d: unused or absent partitions have a PARTUUID", lbs)
		}
	}

	pt, err := readPartTable(bytes.NewReader(mbrDisk(0x0badcafe)), 512)
	if err != nil || pt.Kind != "mbr" {
		t.Fatalf("MBR: %+v, %v", pt, err)
	}
	if got := pt.partUUID(1); got != "0badcafe-01" {
		t.Errorf("MBR partition 1 PARTUUID %q, want 0badcafe-01", got)
	}
	if got := pt.partUUID(10); got != "0badcafe-0a" {
		t.Errorf("MBR partition 10 PARTUUID %q, want 0badcafe-0a (hex, as the kernel prints it)", got)
	}

	// Hostile headers are refused, not followed.
	bad := gptDisk(t, 512, []gptEntry{{"11111111-2222-3333-4444-555555555555", "x"}})
	binary.LittleEndian.PutUint32(bad[512+gptNumEntriesOff:], 1<<30)
	if _, err := readPartTable(bytes.NewReader(bad), 512); err == nil {
		t.Error("a GPT header with 2^30 entries was accepted")
	}
	if pt, err := readPartTable(bytes.NewReader(make([]byte, 100)), 512); err != nil || pt.Kind != "" {
		t.Errorf("short disk: %+v, %v", pt, err)
	}
}

// fakeSys is a /sys/class/block and /dev made of plain files.
type fakeSys struct {
	t        *testing.T
	sysBlock string
	devices  string
	dev      string
}

func newFakeSys(t *testing.T) *fakeSys {
	root := t.TempDir()
	f := &fakeSys{t: t, sysBlock: filepath.Join(root, "sys/class/block"),
		devices: filepath.Join(root, "sys/devices/virtual/block"), dev: filepath.Join(root, "dev")}
	for _, d := range []string{f.sysBlock, f.devices, f.dev} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fakeSys) write(p, s string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// add creates a device: its sysfs directory (under its disk's for a
// partition), the class link, and /dev/<name> holding content.
func (f *fakeSys) add(name, disk string, partN int, partName string, content []byte) {
	f.t.Helper()
	dir := filepath.Join(f.devices, name)
	uevent := fmt.Sprintf("MAJOR=254\nMINOR=0\nDEVNAME=%s\nDEVTYPE=disk\n", name)
	if disk != "" {
		dir = filepath.Join(f.devices, disk, name)
		uevent = fmt.Sprintf("MAJOR=254\nMINOR=%d\nDEVNAME=%s\nDEVTYPE=partition\nPARTN=%d\n", partN, name, partN)
		if partName != "" {
			uevent += "PARTNAME=" + partName + "\n"
		}
		f.write(filepath.Join(dir, "partition"), fmt.Sprintf("%d\n", partN))
	} else {
		f.write(filepath.Join(dir, "queue", "logical_block_size"), "512\n")
	}
	f.write(filepath.Join(dir, "uevent"), uevent)
	f.write(filepath.Join(dir, "size"), fmt.Sprintf("%d\n", (len(content)+511)/512))
	rel, err := filepath.Rel(f.sysBlock, dir)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(rel, filepath.Join(f.sysBlock, name)); err != nil {
		f.t.Fatal(err)
	}
	if content != nil {
		f.write(filepath.Join(f.dev, name), string(content))
	}
}

func (f *fakeSys) devs() *Devices { return &Devices{SysBlock: f.sysBlock, DevDir: f.dev} }

func TestFindRootDevice(t *testing.T) {
	f := newFakeSys(t)
	const (
		rootUUID = "3f1c2b8e-1d2a-4c55-9e77-0123456789ab"
		dataUUID = "5e5e5e5e-0000-4000-8000-00000000beef"
		partUUID = "aabbccdd-eeff-0011-2233-445566778899"
	)
	// vda: GPT with an unnamed-in-uevent root partition (2) and a data
	// partition; vdb: MBR disk with an xfs partition; vdc: btrfs on the
	// whole disk; loop0: empty, as unused loop devices are.
	f.add("vda", "", 0, "", gptDisk(t, 512, []gptEntry{
		{"11111111-2222-3333-4444-555555555555", "esp"},
		{partUUID, "cfs-root"},
		{"99999999-8888-7777-6666-555555555555", "data"},
	}))
	f.add("vda1", "vda", 1, "esp", make([]byte, 4096))
	f.add("vda2", "vda", 2, "", blockdevtest.Ext4(t, rootUUID, "cfsroot"))
	f.add("vda3", "vda", 3, "data", blockdevtest.XFS(t, dataUUID, "data"))
	f.add("vdb", "", 0, "", mbrDisk(0x0badcafe))
	f.add("vdb1", "vdb", 1, "", blockdevtest.XFS(t, "12345678-1234-1234-1234-123456789abc", "mbrdata"))
	f.add("vdc", "", 0, "", blockdevtest.Btrfs(t, "feedface-0000-4000-8000-000000000000", "pool"))
	f.add("loop0", "", 0, "", nil)
	f.write(filepath.Join(f.devices, "loop0", "size"), "0\n")

	tests := []struct {
		root string
		want string // sysfs name; "" for not found
	}{
		{"UUID=" + rootUUID, "vda2"},
		{"UUID=" + strings.ToUpper(rootUUID), "vda2"},
		{"LABEL=cfsroot", "vda2"},
		{"LABEL=pool", "vdc"},
		{"LABEL=mbrdata", "vdb1"},
		{"PARTUUID=" + partUUID, "vda2"},
		{"PARTUUID=" + strings.ToUpper(partUUID), "vda2"},
		{"PARTUUID=" + partUUID + "/PARTNROFF=1", "vda3"},
		{"PARTUUID=0badcafe-01", "vdb1"},
		{"PARTLABEL=cfs-root", "vda2"}, // from the GPT: uevent has no PARTNAME
		{"PARTLABEL=data", "vda3"},     // from uevent
		{"UUID=feedface-0000-4000-8000-000000000000", "vdc"},
		{"/dev/disk/by-uuid/" + dataUUID, "vda3"},
		{"/dev/disk/by-partlabel/cfs-root", "vda2"},
		{"UUID=00000000-0000-0000-0000-000000000000", ""},
		{"LABEL=nothere", ""},
		{"PARTUUID=0badcafe-02", ""},
		{"PARTLABEL=esp2", ""},
	}
	ds := f.devs()
	for _, tt := range tests {
		spec, err := bootcfg.ParseRoot(tt.root)
		if err != nil {
			t.Fatal(err)
		}
		d, err := ds.Find(spec)
		if err != nil {
			t.Errorf("%s: %v", tt.root, err)
			continue
		}
		got := ""
		if d != nil {
			got = d.Name
			if want := filepath.Join(f.dev, d.Name); d.Node != want {
				t.Errorf("%s: node %s, want %s", tt.root, d.Node, want)
			}
		}
		if got != tt.want {
			t.Errorf("root=%s found %q, want %q", tt.root, got, tt.want)
		}
	}

	// A path is used as it is, and probed for its type.
	d, err := ds.Find(bootcfg.RootSpec{Kind: bootcfg.RootPath, Value: filepath.Join(f.dev, "vda3")})
	if err != nil || d == nil || d.FS.Type != "xfs" {
		t.Errorf("path: %+v, %v", d, err)
	}
	if d, err := ds.Find(bootcfg.RootSpec{Kind: bootcfg.RootPath, Value: filepath.Join(f.dev, "vdz")}); d != nil || err != nil {
		t.Errorf("missing path: %+v, %v", d, err)
	}
	if _, err := ds.Find(bootcfg.RootSpec{Kind: bootcfg.RootPartUUID, Value: partUUID + "/PARTNROFF=x"}); err == nil {
		t.Error("bad PARTNROFF accepted")
	}
}

// TestFindProbesOnce checks that waiting does not re-read every device on
// every poll: a device is probed when it first appears, and a device that
// appears later is found.
func TestFindProbesOnce(t *testing.T) {
	f := newFakeSys(t)
	const u = "3f1c2b8e-1d2a-4c55-9e77-0123456789ab"
	f.add("vda", "", 0, "", blockdevtest.Ext4(t, "11111111-1111-1111-1111-111111111111", "other"))
	ds := f.devs()
	spec := bootcfg.RootSpec{Kind: bootcfg.RootUUID, Value: u}
	if d, err := ds.Find(spec); d != nil || err != nil {
		t.Fatalf("found %+v, %v before the device exists", d, err)
	}
	// Change vda behind the cache: it must not be read again.
	if err := os.WriteFile(filepath.Join(f.dev, "vda"), blockdevtest.Ext4(t, u, "x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d, _ := ds.Find(spec); d != nil {
		t.Fatal("vda was probed again")
	}
	f.add("vdb", "", 0, "", blockdevtest.Ext4(t, u, "root"))
	if d, err := ds.Find(spec); err != nil || d == nil || d.Name != "vdb" {
		t.Fatalf("new device: %+v, %v", d, err)
	}
}

func TestWaitRootTimeout(t *testing.T) {
	f := newFakeSys(t)
	f.add("vda", "", 0, "", blockdevtest.Ext4(t, "11111111-1111-1111-1111-111111111111", "other"))
	p := &Plan{Root: bootcfg.RootSpec{Kind: bootcfg.RootLabel, Value: "cfsroot"}, RootTimeout: 30 * time.Millisecond}
	var out bytes.Buffer
	_, err := waitRoot(p, f.devs(), NewLog(&out, nil, false))
	if err == nil {
		t.Fatal("no error")
	}
	want := "root device LABEL=cfsroot did not appear within 30ms; block devices present: vda (ext4, UUID=11111111-1111-1111-1111-111111111111, LABEL=other)"
	if err.Error() != want {
		t.Errorf("error:\n%s\nwant:\n%s", err, want)
	}
	if _, err := waitRoot(&Plan{RootTimeout: time.Millisecond}, f.devs(), NewLog(&out, nil, false)); err == nil || !strings.Contains(err.Error(), "no root=") {
		t.Errorf("without root=: %v", err)
	}
}

func TestUnescape(t *testing.T) {
	if got := unescapeUdev(`my\x20disk\x2f`); got != "my disk/" {
		t.Errorf("udev: %q", got)
	}
	if got := mountinfo.Unescape(`/a\040b\134`); got != `/a b\` {
		t.Errorf("mountinfo: %q", got)
	}
}

// TestProbeNode reads a file system's identity from a device node (here a
// file); blockdev's own tests check the offsets against mkfs.ext4.
func TestProbeNode(t *testing.T) {
	const uuid = "0f3c55aa-1b2c-4d5e-8f90-a1b2c3d4e5f6"
	img := filepath.Join(t.TempDir(), "ext4.img")
	if err := os.WriteFile(img, blockdevtest.Ext4(t, uuid, "cfs root"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := probeNode(img)
	if want := (fsInfo{Type: "ext4", UUID: uuid, Label: "cfs root"}); err != nil || got != want {
		t.Errorf("probe: %+v, %v; want %+v", got, err, want)
	}
	if _, err := probeNode(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("probing a missing node succeeded")
	}
}
