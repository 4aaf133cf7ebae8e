package deploy

import (
	"testing"
)

// BenchmarkStatus measures reading a sysroot with five deployments: the
// entries, each state directory's origin and stateroot, the boot record.
// Goal: under 50 ms.
func BenchmarkStatus(b *testing.B) {
	f := newFixture(b)
	for _, c := range f.versions(5) {
		f.rolloutOn(c.ID.String(), 10)
	}
	h := f.host()
	b.ResetTimer()
	for b.Loop() {
		ds, err := h.Status()
		if err != nil || len(ds.List) != 5 {
			b.Fatalf("%d deployments, %v", len(ds.List), err)
		}
	}
}

// BenchmarkRolloutSameKernel measures the rollout of a new commit whose
// kernel, modules and cfs-init are unchanged, on top of a deployment:
// /etc checkout and merge, boot files (kernel and initramfs reused),
// entry, retention. Goal: under 1 s.
func BenchmarkRolloutSameKernel(b *testing.B) {
	f := newFixture(b)
	first := f.versions(1)[0]
	f.rolloutOn(first.ID.String(), 1)
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		f.write("etc/version", string(rune('a'+i%26))+"\n", 0o644)
		f.write("usr/share/doc/n", string(rune('a'+i)), 0o644)
		c := f.commit("os", "")
		b.StartTimer()
		res := f.rolloutOn(c.ID.String(), 1)
		if !res.InitramfsReused {
			b.Fatalf("initramfs rebuilt")
		}
	}
}
