package bootcfg

import (
	"slices"
	"strings"
)

// CompareEntries orders entries the way systemd-boot orders its menu, the
// first being the default when loader.conf names none:
//
//  1. entries whose boot counter has run out (+0) go last;
//  2. entries with a sort-key come before those without;
//  3. if both have one: by sort-key, then machine-id (ascending), then
//     version, newest first;
//  4. then by ID, newest first by version comparison (IDs usually carry a
//     version), compared case-insensitively as on FAT;
//  5. if both are counted: more tries left first, then fewer tries done;
//  6. finally by file name, so the order never depends on directory order.
func CompareEntries(a, b *Entry) int {
	if r := cmpBool(a.exhausted(), b.exhausted()); r != 0 {
		return r
	}
	if r := cmpBool(a.SortKey == "", b.SortKey == ""); r != 0 {
		return r
	}
	if a.SortKey != "" {
		if r := strings.Compare(a.SortKey, b.SortKey); r != 0 {
			return r
		}
		if r := strings.Compare(a.MachineID, b.MachineID); r != 0 {
			return r
		}
		if r := CompareVersions(a.Version, b.Version); r != 0 {
			return -r
		}
	}
	if r := CompareVersions(sortID(a), sortID(b)); r != 0 {
		return -r
	}
	if a.Counter != nil && b.Counter != nil {
		if r := cmpInt(a.Counter.Left, b.Counter.Left); r != 0 {
			return -r
		}
		if r := cmpInt(a.Counter.Done, b.Counter.Done); r != 0 {
			return r
		}
	}
	return strings.Compare(a.File, b.File)
}

// SortEntries sorts entries into boot menu order (see CompareEntries).
func SortEntries(entries []*Entry) {
	slices.SortStableFunc(entries, CompareEntries)
}

func (e *Entry) exhausted() bool { return e.Counter != nil && e.Counter.Left == 0 }

// sortID is the identifier systemd-boot compares: the file name without
// the counter, in lower case.
func sortID(e *Entry) string {
	return strings.ToLower(e.ID + entrySuffix)
}
