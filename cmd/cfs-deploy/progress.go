package main

import (
	"fmt"
	"os"
	"sync"
)

// progress draws a one-line counter on stderr; it is only used when stderr
// is a terminal. A nil *progress does nothing.
type progress struct {
	mu    sync.Mutex
	label string
	shown bool
}

func newProgress(label string) *progress { return &progress{label: label} }

func (p *progress) update(files, bytes int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(os.Stderr, "\r%s: %d files, %s   ", p.label, files, humanBytes(bytes))
	p.shown = true
}

// line shows text after the label.
func (p *progress) line(text string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(os.Stderr, "\r\033[K%s: %s", p.label, text)
	p.shown = true
}

func (p *progress) done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
}
