package initboot

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/bootcfg"
)

// Devices finds block devices by what root= names. It reads
// /sys/class/block and the devices' first blocks, and remembers what it
// learned: while waiting for the root device each poll only lists the
// directory and probes the devices that are new since the last one.
type Devices struct {
	SysBlock string // /sys/class/block
	DevDir   string // /dev

	seen   map[string]*blockDev
	tables map[string]*partTable // by disk name
}

// NewDevices returns a Devices on the real /sys and /dev.
func NewDevices() *Devices {
	return &Devices{SysBlock: "/sys/class/block", DevDir: "/dev"}
}

// blockDev is one block device as sysfs and its superblock describe it.
type blockDev struct {
	Name     string // sysfs name: vda, vda1, nvme0n1p2
	Node     string // device node: /dev/vda1
	Disk     string // a partition's disk ("vda"); "" for a whole disk
	PartN    int    // partition number; 0 for a whole disk
	PartName string // PARTNAME from uevent (the GPT name)
	PartUUID string
	FS       fsInfo
	Err      error // reading the device failed
}

func (d *blockDev) String() string {
	var b strings.Builder
	b.WriteString(d.Name)
	var parts []string
	if d.FS.Type != "" {
		parts = append(parts, d.FS.Type)
		if d.FS.UUID != "" {
			parts = append(parts, "UUID="+d.FS.UUID)
		}
		if d.FS.Label != "" {
			parts = append(parts, "LABEL="+d.FS.Label)
		}
	}
	if d.PartUUID != "" {
		parts = append(parts, "PARTUUID="+d.PartUUID)
	}
	if d.PartName != "" {
		parts = append(parts, "PARTLABEL="+d.PartName)
	}
	if d.Err != nil {
		parts = append(parts, d.Err.Error())
	}
	if len(parts) == 0 {
		parts = append(parts, "no known file system")
	}
	b.WriteString(" (" + strings.Join(parts, ", ") + ")")
	return b.String()
}

// byPathTags maps udev's /dev/disk/by-* directories to root= tags, since an
// initramfs without udev has no such links: root=/dev/disk/by-uuid/X is
// looked up as UUID=X.
var byPathTags = map[string]string{
	"by-uuid":      bootcfg.RootUUID,
	"by-label":     bootcfg.RootLabel,
	"by-partuuid":  bootcfg.RootPartUUID,
	"by-partlabel": bootcfg.RootPartLabel,
}

// Find looks for the device spec names once. It returns nil and no error
// when the device is not there (yet).
func (ds *Devices) Find(spec bootcfg.RootSpec) (*blockDev, error) {
	if spec.Kind == bootcfg.RootPath {
		if tag, ok := byPathTag(spec.Value); ok {
			spec = tag
		} else {
			if _, err := os.Stat(spec.Value); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil, nil
				}
				return nil, err
			}
			d := &blockDev{Name: filepath.Base(spec.Value), Node: spec.Value}
			d.FS, d.Err = probeNode(spec.Value)
			return d, nil
		}
	}
	devs, err := ds.scan()
	if err != nil {
		return nil, err
	}
	value, partOff, err := splitPartNrOff(spec)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		if !matches(d, spec.Kind, value) {
			continue
		}
		if partOff == 0 {
			return d, nil
		}
		for _, o := range devs {
			if o.Disk != "" && o.Disk == d.Disk && o.PartN == d.PartN+partOff {
				return o, nil
			}
		}
	}
	return nil, nil
}

// byPathTag turns /dev/disk/by-uuid/X and friends into UUID=X.
func byPathTag(p string) (bootcfg.RootSpec, bool) {
	rest, ok := strings.CutPrefix(filepath.Clean(p), "/dev/disk/")
	if !ok {
		return bootcfg.RootSpec{}, false
	}
	dir, name, ok := strings.Cut(rest, "/")
	kind, known := byPathTags[dir]
	if !ok || !known || name == "" || strings.Contains(name, "/") {
		return bootcfg.RootSpec{}, false
	}
	return bootcfg.RootSpec{Kind: kind, Value: unescapeUdev(name)}, true
}

// unescapeUdev undoes udev's \xNN escaping of link names (a label with a
// space is "my\x20disk").
func unescapeUdev(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if n, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// splitPartNrOff handles the kernel's PARTUUID=<uuid>/PARTNROFF=<n>: the
// partition n places after the one with that UUID, on the same disk.
func splitPartNrOff(spec bootcfg.RootSpec) (string, int, error) {
	if spec.Kind != bootcfg.RootPartUUID {
		return spec.Value, 0, nil
	}
	v, off, ok := strings.Cut(spec.Value, "/")
	if !ok {
		return v, 0, nil
	}
	n, found := strings.CutPrefix(off, "PARTNROFF=")
	i, err := strconv.Atoi(n)
	if !found || err != nil {
		return "", 0, fmt.Errorf("root=%s: after the partition UUID only /PARTNROFF=<number> may follow", spec)
	}
	return v, i, nil
}

func matches(d *blockDev, kind, value string) bool {
	switch kind {
	case bootcfg.RootUUID:
		return d.FS.UUID != "" && (strings.EqualFold(d.FS.UUID, value) ||
			strings.EqualFold(strings.ReplaceAll(d.FS.UUID, "-", ""), value))
	case bootcfg.RootLabel:
		return d.FS.Type != "" && d.FS.Label == value
	case bootcfg.RootPartUUID:
		return d.PartUUID != "" && strings.EqualFold(d.PartUUID, value)
	case bootcfg.RootPartLabel:
		return d.PartName != "" && d.PartName == value
	}
	return false
}

// scan lists the block devices, probing those not seen before, and returns
// all of them in name order.
func (ds *Devices) scan() ([]*blockDev, error) {
	if ds.seen == nil {
		ds.seen = map[string]*blockDev{}
		ds.tables = map[string]*partTable{}
	}
	ents, err := os.ReadDir(ds.SysBlock)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var out []*blockDev
	for _, name := range names {
		d, ok := ds.seen[name]
		if !ok {
			var usable bool
			d, usable = ds.probe(name)
			if !usable {
				continue // no node yet, or empty (an unused loop device): look again next time
			}
			ds.seen[name] = d
		}
		out = append(out, d)
	}
	return out, nil
}

// probe describes one device. usable is false while the device cannot be
// described yet.
func (ds *Devices) probe(name string) (*blockDev, bool) {
	sys := filepath.Join(ds.SysBlock, name)
	if size, err := readInt(filepath.Join(sys, "size")); err != nil || size == 0 {
		return nil, false
	}
	ue := readUevent(filepath.Join(sys, "uevent"))
	devName := ue["DEVNAME"]
	if devName == "" {
		devName = name
	}
	d := &blockDev{Name: name, Node: filepath.Join(ds.DevDir, devName), PartName: ue["PARTNAME"]}
	if _, err := os.Stat(d.Node); err != nil {
		return nil, false
	}
	if ue["DEVTYPE"] == "partition" {
		d.PartN, _ = strconv.Atoi(ue["PARTN"])
		if d.PartN == 0 {
			d.PartN, _ = readInt(filepath.Join(sys, "partition"))
		}
		// /sys/class/block/vda1 links to .../block/vda/vda1.
		if real, err := filepath.EvalSymlinks(sys); err == nil {
			d.Disk = filepath.Base(filepath.Dir(real))
		}
		if t := ds.table(d.Disk); t != nil {
			d.PartUUID = t.partUUID(d.PartN)
			if d.PartName == "" {
				d.PartName = t.partName(d.PartN)
			}
		}
	}
	d.FS, d.Err = probeNode(d.Node)
	return d, true
}

// table reads (once) the partition table of a disk.
func (ds *Devices) table(disk string) *partTable {
	if disk == "" {
		return nil
	}
	if t, ok := ds.tables[disk]; ok {
		return t
	}
	sys := filepath.Join(ds.SysBlock, disk)
	devName := readUevent(filepath.Join(sys, "uevent"))["DEVNAME"]
	if devName == "" {
		devName = disk
	}
	lbs, _ := readInt(filepath.Join(sys, "queue", "logical_block_size"))
	f, err := os.Open(filepath.Join(ds.DevDir, devName))
	if err != nil {
		return nil // not remembered: the node may appear later
	}
	defer f.Close()
	t, err := readPartTable(f, int64(lbs))
	if err != nil {
		t = &partTable{}
	}
	ds.tables[disk] = t
	return t
}

func probeNode(node string) (fsInfo, error) {
	f, err := os.Open(node)
	if err != nil {
		return fsInfo{}, err
	}
	defer f.Close()
	info, err := probeFS(f)
	if err != nil {
		return fsInfo{}, fmt.Errorf("read %s: %w", node, err)
	}
	return info, nil
}

// describe lists the devices seen, for an error message.
func (ds *Devices) describe() string {
	devs, err := ds.scan()
	if err != nil {
		return err.Error()
	}
	if len(devs) == 0 {
		return "no block devices at all (is the disk controller's module in the initramfs?)"
	}
	s := make([]string, len(devs))
	for i, d := range devs {
		s[i] = d.String()
	}
	return "block devices present: " + strings.Join(s, "; ")
}

func readInt(p string) (int, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(bytes.TrimSpace(b)))
}

// readUevent reads a sysfs uevent file (KEY=value lines).
func readUevent(p string) map[string]string {
	m := map[string]string{}
	f, err := os.Open(p)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}
