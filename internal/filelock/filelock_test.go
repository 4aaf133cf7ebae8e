package filelock

import (
	"path/filepath"
	"testing"
	"time"
)

func TestExclusiveWaits(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	unlock, err := Exclusive(p)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() {
		u, err := Exclusive(p)
		if err == nil {
			u()
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("second exclusive lock granted while the first is held")
	case <-time.After(200 * time.Millisecond):
	}
	unlock()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("second lock not granted after release")
	}
}
