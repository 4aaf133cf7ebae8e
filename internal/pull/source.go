package pull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrNotFound means the remote has no such file (HTTP 404 or 410, or a
// missing file): retrying will not help.
var ErrNotFound = errors.New("not found on the remote")

// StatusError is an HTTP response other than success or not found.
type StatusError struct {
	URL  string
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("GET %s: HTTP %d %s", e.URL, e.Code, http.StatusText(e.Code))
}

// errStalled is returned by a body that delivered nothing for the idle
// timeout.
var errStalled = errors.New("no data received within the idle timeout")

// source serves the files of a published repository.
type source interface {
	// open returns the file rel (slash-separated, relative to the
	// repository) from byte off on.
	open(ctx context.Context, rel string, off int64) (io.ReadCloser, error)
	String() string
}

// newSource understands http:// and https:// URLs, file:// URLs and plain
// paths.
func newSource(remote string, client *http.Client, idle time.Duration) (source, error) {
	if remote == "" {
		return nil, errors.New("empty remote URL")
	}
	scheme, _, hasScheme := strings.Cut(remote, "://")
	if !hasScheme {
		return fileSource(filepath.Clean(remote)), nil
	}
	switch strings.ToLower(scheme) {
	case "http", "https":
		u, err := url.Parse(remote)
		if err != nil {
			return nil, fmt.Errorf("remote %s: %w", remote, err)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("remote %s: a repository URL takes no query or fragment", remote)
		}
		u.Path = strings.TrimRight(u.Path, "/")
		return &httpSource{base: u.String(), client: client, idle: idle}, nil
	case "file":
		u, err := url.Parse(remote)
		if err != nil {
			return nil, fmt.Errorf("remote %s: %w", remote, err)
		}
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("remote %s: file:// URLs must name a local path (file:///path)", remote)
		}
		return fileSource(filepath.Clean(u.Path)), nil
	}
	return nil, fmt.Errorf("remote %s: unsupported scheme %q (http, https, file, or a plain path; docker://, oci: and oci-archive: are container images)", remote, scheme)
}

type fileSource string

func (s fileSource) String() string { return string(s) }

func (s fileSource) open(_ context.Context, rel string, off int64) (io.ReadCloser, error) {
	f, err := os.Open(filepath.Join(string(s), filepath.FromSlash(rel)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", filepath.Join(string(s), rel), ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

type httpSource struct {
	base   string
	client *http.Client
	idle   time.Duration
}

func (s *httpSource) String() string { return s.base }

func (s *httpSource) open(ctx context.Context, rel string, off int64) (io.ReadCloser, error) {
	u := s.base + "/" + rel
	// The request lives as long as its body: the watchdog cancels it
	// when the server stops sending.
	rctx, cancel := context.WithCancelCause(ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	fail := func(err error) (io.ReadCloser, error) {
		resp.Body.Close()
		cancel(nil)
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return fail(fmt.Errorf("GET %s: %w", u, ErrNotFound))
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		if start, ok := rangeStart(resp.Header.Get("Content-Range")); !ok || start != off {
			return fail(fmt.Errorf("GET %s: asked for bytes from %d, got Content-Range %q", u, off, resp.Header.Get("Content-Range")))
		}
	case resp.StatusCode == http.StatusOK:
		if off > 0 {
			// The server ignored the range: skip what we have.
			if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
				return fail(fmt.Errorf("GET %s: %w", u, err))
			}
		}
	default:
		return fail(&StatusError{URL: u, Code: resp.StatusCode})
	}
	return newWatchdog(resp.Body, s.idle, cancel), nil
}

// rangeStart parses the first byte position of "bytes START-END/SIZE".
func rangeStart(h string) (int64, bool) {
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, false
	}
	first, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(first, 10, 64)
	return n, err == nil
}

// watchdog is a response body that cancels its request when no byte
// arrives for idle: a server that stalls mid-body costs a bounded time.
type watchdog struct {
	body   io.ReadCloser
	timer  *time.Timer
	idle   time.Duration
	cancel context.CancelCauseFunc
}

func newWatchdog(body io.ReadCloser, idle time.Duration, cancel context.CancelCauseFunc) *watchdog {
	w := &watchdog{body: body, idle: idle, cancel: cancel}
	w.timer = time.AfterFunc(idle, func() { cancel(errStalled) })
	return w
}

func (w *watchdog) Read(p []byte) (int, error) {
	n, err := w.body.Read(p)
	if n > 0 {
		w.timer.Reset(w.idle)
	}
	if err != nil && err != io.EOF && !w.timer.Stop() {
		// The timer fired: say so rather than "context canceled".
		err = fmt.Errorf("%w (%v)", errStalled, w.idle)
	}
	return n, err
}

func (w *watchdog) Close() error {
	w.timer.Stop()
	err := w.body.Close()
	w.cancel(nil)
	return err
}
