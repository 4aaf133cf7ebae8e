package pull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/objstore"
)

// Retry bounds how long a flaky remote is tried.
type Retry struct {
	// Attempts is how many times one file is tried before the pull fails
	// (default 6). Every failed request counts: a connection error, an
	// HTTP 5xx/408/429, a body cut short, a body with the wrong digest.
	Attempts int
	// Backoff is the wait after the first failure; it doubles with each
	// further one, up to MaxBackoff, with up to 50% random jitter
	// (defaults 200 ms and 5 s).
	Backoff, MaxBackoff time.Duration
	// Idle is how long a response may send nothing before it is given up
	// (default 30 s).
	Idle time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 6
	}
	if r.Backoff <= 0 {
		r.Backoff = 200 * time.Millisecond
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = 5 * time.Second
	}
	if r.Idle <= 0 {
		r.Idle = 30 * time.Second
	}
	return r
}

// wait sleeps before try number n+1 (n failures so far), or returns the
// context's error.
func (r Retry) wait(ctx context.Context, n int) error {
	d := r.Backoff << min(n-1, 20)
	if d > r.MaxBackoff || d <= 0 {
		d = r.MaxBackoff
	}
	d += time.Duration(rand.Int64N(int64(d)/2 + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// retryable tells failures worth another try from final answers.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, ErrNotFound) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code >= 500 || se.Code == 408 || se.Code == 429
	}
	return true // connection errors, resets, stalls, short bodies
}

// counters are shared by all fetches of one pull.
type counters struct {
	bytes    atomic.Int64 // body bytes received
	requests atomic.Int64
	retries  atomic.Int64
}

// body reads one remote file from start to end, reopening it from where
// it broke off (an HTTP range request) when the connection fails or the
// body ends early. It gives up after the retry budget it shares with its
// caller is spent.
type body struct {
	ctx   context.Context
	src   source
	rel   string
	size  int64 // expected size, -1 if unknown
	retry Retry
	c     *counters
	fails *int // failed tries of this file so far

	rc  io.ReadCloser
	off int64
}

func (b *body) Read(p []byte) (int, error) {
	for {
		if b.rc == nil {
			b.c.requests.Add(1)
			rc, err := b.src.open(b.ctx, b.rel, b.off)
			if err != nil {
				if err = b.failed(err); err != nil {
					return 0, err
				}
				continue
			}
			b.rc = rc
		}
		if b.size >= 0 && b.off >= b.size {
			// All promised bytes are here; one more read shows a body
			// that is too long.
			p = p[:min(len(p), 1)]
		}
		n, err := b.rc.Read(p)
		b.off += int64(n)
		b.c.bytes.Add(int64(n))
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF && (b.size < 0 || b.off >= b.size):
			return n, io.EOF
		case err == io.EOF:
			err = fmt.Errorf("body ended after %d of %d bytes: %w", b.off, b.size, io.ErrUnexpectedEOF)
		}
		b.rc.Close()
		b.rc = nil
		if err = b.failed(err); err != nil {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
	}
}

// failed counts a failed try and waits before the next, or returns the
// error that ends the fetch.
func (b *body) failed(err error) error {
	*b.fails++
	if !retryable(b.ctx, err) || *b.fails >= b.retry.Attempts {
		return err
	}
	b.c.retries.Add(1)
	if werr := b.retry.wait(b.ctx, *b.fails); werr != nil {
		return werr
	}
	return nil
}

func (b *body) Close() error {
	if b.rc == nil {
		return nil
	}
	err := b.rc.Close()
	b.rc = nil
	return err
}

// fetchBytes reads a small remote file whole, at most limit bytes.
func (p *puller) fetchBytes(ctx context.Context, rel string, limit int64) ([]byte, error) {
	fails := 0
	b := &body{ctx: ctx, src: p.src, rel: rel, size: -1, retry: p.retry, c: &p.c, fails: &fails}
	defer b.Close()
	data, err := io.ReadAll(io.LimitReader(b, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s/%s is larger than %d bytes", p.src, rel, limit)
	}
	return data, nil
}

// fetchVerified reads a remote file whose content must have the digest
// check computes, trying again (from scratch) when it does not: a
// corrupted transfer, or a server caught mid-update.
func (p *puller) fetchVerified(ctx context.Context, rel string, limit int64, check func([]byte) error) ([]byte, error) {
	fails := 0
	for {
		data, err := p.fetchBytes(ctx, rel, limit)
		if err != nil {
			return nil, err
		}
		err = check(data)
		if err == nil {
			return data, nil
		}
		fails++
		if fails >= p.retry.Attempts {
			return nil, fmt.Errorf("%s/%s: %w (tried %d times)", p.src, rel, err, fails)
		}
		p.c.retries.Add(1)
		if werr := p.retry.wait(ctx, fails); werr != nil {
			return nil, werr
		}
	}
}

// storeObject fetches the object rel into the store with put, which
// checks it against its digest (and size, when known) before it gets its
// name. An object of unknown size may not be larger than limit.
func (p *puller) storeObject(ctx context.Context, rel string, size, limit int64, put func(io.Reader) (bool, error)) (bool, error) {
	fails := 0
	for {
		b := &body{ctx: ctx, src: p.src, rel: rel, size: size, retry: p.retry, c: &p.c, fails: &fails}
		var rd io.Reader = b
		if size < 0 {
			rd = &capped{r: b, left: limit, limit: limit, rel: rel}
		}
		created, err := put(rd)
		b.Close()
		if err == nil {
			return created, nil
		}
		if !errors.Is(err, objstore.ErrDigestMismatch) {
			return false, err
		}
		fails++
		if fails >= p.retry.Attempts {
			return false, fmt.Errorf("%w (the remote sent wrong bytes %d times)", err, fails)
		}
		p.c.retries.Add(1)
		if werr := p.retry.wait(ctx, fails); werr != nil {
			return false, werr
		}
	}
}

// capped fails a stream longer than its limit: a server must not fill the
// disk with an object whose size nothing announced.
type capped struct {
	r           io.Reader
	left, limit int64
	rel         string
}

func (c *capped) Read(p []byte) (int, error) {
	if c.left <= 0 {
		var one [1]byte
		if n, _ := c.r.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("%s: larger than the %d bytes allowed", c.rel, c.limit)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}
