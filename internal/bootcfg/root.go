package bootcfg

import (
	"fmt"
	"strings"
)

// Kinds of root device specification.
const (
	RootPath      = "path"      // root=/dev/vda2, root=/dev/disk/by-label/x
	RootUUID      = "UUID"      // filesystem UUID
	RootLabel     = "LABEL"     // filesystem label
	RootPartUUID  = "PARTUUID"  // GPT partition UUID or MBR disk signature-partition
	RootPartLabel = "PARTLABEL" // GPT partition name
)

// RootSpec says how to find the root device.
type RootSpec struct {
	Kind  string // one of the Root* constants
	Value string // the path, or the text after "KIND="
}

// tagKinds are the KIND=value forms, in the spelling systemd, dracut and
// the kernel (for PARTUUID/PARTLABEL) use: upper case only.
var tagKinds = []string{RootUUID, RootLabel, RootPartUUID, RootPartLabel}

// ParseRoot parses the value of root=. The value is kept verbatim:
// filesystems differ in the case of their UUIDs (vfat uses upper case), and
// the kernel's PARTUUID=<uuid>/PARTNROFF=<n> suffix is left for the
// resolver to interpret.
func ParseRoot(s string) (RootSpec, error) {
	if s == "" {
		return RootSpec{}, fmt.Errorf("root=: empty device")
	}
	if strings.HasPrefix(s, "/") {
		return RootSpec{Kind: RootPath, Value: s}, nil
	}
	for _, kind := range tagKinds {
		if v, ok := strings.CutPrefix(s, kind+"="); ok {
			if v == "" {
				return RootSpec{}, fmt.Errorf("root=%s: empty %s", s, kind)
			}
			return RootSpec{Kind: kind, Value: v}, nil
		}
	}
	return RootSpec{}, fmt.Errorf("root=%s: not a device path (/dev/...) or UUID=, LABEL=, PARTUUID=, PARTLABEL=", shorten(s))
}

// String returns the spec as written after root=.
func (r RootSpec) String() string {
	if r.Kind == RootPath {
		return r.Value
	}
	return r.Kind + "=" + r.Value
}
