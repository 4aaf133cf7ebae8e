package etcmerge

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// benchTrees returns a 2,000-file /etc (sizes mostly under 4 KiB, a few
// of 100 KiB, in 100 directories), the new image's version of it (a few
// files changed, a few added) and the local /etc with 50 changes: 20
// files modified, 10 chmodded, 10 added, 10 deleted.
func benchTrees() (old, newImg, local tree) {
	rng := rand.New(rand.NewPCG(1, 2))
	old = tree{"": dir(0o755)}
	var files []string
	for d := range 100 {
		dp := fmt.Sprintf("d%02d", d)
		old[dp] = dir(0o755)
		for f := range 20 {
			size := 100 + rng.IntN(3900)
			if len(files)%100 == 7 {
				size = 100 << 10
			}
			p := fmt.Sprintf("%s/f%02d.conf", dp, f)
			old[p] = file(strings.Repeat(string(rune('a'+rng.IntN(26))), size), 0o644)
			files = append(files, p)
		}
	}
	newImg = old.clone()
	for i := range 20 {
		newImg[files[i*97%len(files)]] = file(fmt.Sprintf("new default %d\n", i), 0o644).fresh()
		newImg[fmt.Sprintf("d%02d/new%d.conf", i, i)] = file("new\n", 0o644).fresh()
	}
	local = old.clone()
	for i := range 50 {
		p := files[(i*37+11)%len(files)]
		switch {
		case i < 20:
			local.mod(p, func(e ent) ent { e.data = "local " + e.data[6:]; return e.local() })
		case i < 30:
			local.mod(p, func(e ent) ent { e.perm = 0o600; return e })
		case i < 40:
			local[fmt.Sprintf("d%02d/local%d.conf", i, i)] = file("local\n", 0o644).local()
		default:
			delete(local, p)
		}
	}
	return old, newImg, local
}

func BenchmarkMerge(b *testing.B) {
	needRoot(b)
	old, newImg, localTree := benchTrees()
	top := b.TempDir()
	local := filepath.Join(top, "local")
	write(b, local, localTree)
	base := base(b, old, false)
	dest := filepath.Join(top, "dest")
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		if err := os.RemoveAll(dest); err != nil {
			b.Fatal(err)
		}
		write(b, dest, newImg)
		b.StartTimer()
		start := cpuTime()
		res, err := Merge(base, local, dest)
		cpu += cpuTime() - start
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Changes) != 50 {
			b.Fatalf("%d changes, want 50: %v", len(res.Changes), res.Changes)
		}
	}
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
}

func BenchmarkDiff(b *testing.B) {
	needRoot(b)
	old, _, localTree := benchTrees()
	local := filepath.Join(b.TempDir(), "local")
	write(b, local, localTree)
	base := base(b, old, false)
	start := cpuTime()
	for b.Loop() {
		changes, err := Diff(base, local)
		if err != nil {
			b.Fatal(err)
		}
		if len(changes) != 50 {
			b.Fatalf("%d changes, want 50", len(changes))
		}
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system time so far: on a busy
// machine other programs stretch the wall time, the CPU time per op stays
// comparable.
func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
