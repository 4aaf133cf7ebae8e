package bootcfg

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSortEntries(t *testing.T) {
	// In the order systemd-boot shows them.
	want := []*Entry{
		// Sort keys ascending; within one, newest version first.
		{ID: "a-new", SortKey: "alpha", Version: "6.12.10"},
		{ID: "a-old", SortKey: "alpha", Version: "6.12.9"},
		{ID: "a-rc", SortKey: "alpha", Version: "6.12.9~rc1"},
		// Same sort key, another machine-id: grouped after.
		{ID: "a-other", SortKey: "alpha", MachineID: "ffff", Version: "7"},
		{ID: "b", SortKey: "beta", Version: "1"},
		// Without a sort key: by ID, newest first, after all with one.
		{ID: "os-6.12.10"},
		{ID: "os-6.12.9"},
		// The same ID twice, both counted: more tries left first.
		{ID: "os-6.1", File: "os-6.1+3.conf", Counter: &BootCounter{3, 0}},
		{ID: "os-6.1", File: "os-6.1+2-1.conf", Counter: &BootCounter{2, 1}},
		{ID: "os-6.1", File: "os-6.1+2-2.conf", Counter: &BootCounter{2, 2}},
		// Out of tries: last, whatever else they have.
		{ID: "z-bad", SortKey: "alpha", Version: "99", Counter: &BootCounter{0, 3}},
		{ID: "z-bad2", Counter: &BootCounter{0, 1}},
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		got := slices.Clone(want)
		r.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
		SortEntries(got)
		if !slices.Equal(got, want) {
			var ids []string
			for _, e := range got {
				ids = append(ids, e.ID+"/"+e.File)
			}
			t.Fatalf("sorted: %q", ids)
		}
	}
}

func TestCompareEntriesID(t *testing.T) {
	// IDs compare as versions, case-insensitively, newest first.
	a := &Entry{ID: "Fedora-6.12.10"}
	b := &Entry{ID: "fedora-6.12.9"}
	if CompareEntries(a, b) >= 0 {
		t.Errorf("6.12.10 did not sort before 6.12.9")
	}
	// Entirely equal entries fall back to the file name.
	x := &Entry{ID: "x", File: "x.conf"}
	y := &Entry{ID: "x", File: "X.conf"}
	if CompareEntries(x, y) <= 0 || CompareEntries(y, x) >= 0 {
		t.Errorf("file name tie-break missing")
	}
}
