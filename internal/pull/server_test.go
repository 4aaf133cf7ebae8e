package pull

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fault is what the test server does to one response.
type fault int

const (
	ok        fault = iota
	status500       // HTTP 500
	reset           // close the connection before any response
	truncate        // full Content-Length, half the body, then close
	flip            // one byte of the body changed
	stall           // headers and half the body, then nothing for a while
	missing         // HTTP 404
)

func (f fault) String() string {
	return [...]string{"ok", "500", "reset", "truncate", "flip", "stall", "404"}[f]
}

// server serves a repository directory over HTTP on 127.0.0.1, counting
// the body bytes it sends, and injects the faults decide picks.
type server struct {
	*httptest.Server
	mu       sync.Mutex
	bytes    int64                          // body bytes of successful (2xx) responses
	requests map[string]int                 // path -> requests
	ranges   map[string]int                 // path -> range requests
	sent     map[string]int64               // path -> body bytes sent
	decide   func(path string, n int) fault // called with mu held
	stallFor time.Duration
}

func newServer(t *testing.T, dir string) *server {
	s := &server{requests: map[string]int{}, ranges: map[string]int{}, sent: map[string]int64{}, stallFor: 2 * time.Second}
	files := http.FileServer(http.Dir(dir))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		path := strings.TrimPrefix(req.URL.Path, "/")
		s.mu.Lock()
		s.requests[path]++
		n := s.requests[path]
		if req.Header.Get("Range") != "" {
			s.ranges[path]++
		}
		f := ok
		if s.decide != nil {
			f = s.decide(path, n) // under the lock: decide may count
		}
		s.mu.Unlock()
		switch f {
		case status500:
			http.Error(w, "injected failure", http.StatusInternalServerError)
			return
		case missing:
			http.NotFound(w, req)
			return
		case reset:
			panic(http.ErrAbortHandler)
		}
		rec := httptest.NewRecorder()
		files.ServeHTTP(rec, req)
		body := rec.Body.Bytes()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		if f == flip && len(body) > 0 {
			body = bytes.Clone(body)
			body[len(body)/2] ^= 0x40
		}
		w.WriteHeader(rec.Code)
		switch f {
		case truncate, stall:
			half := body[:len(body)/2]
			s.count(path, rec.Code, len(half))
			w.Write(half)
			if fl, ok := w.(http.Flusher); ok {
				fl.Flush()
			}
			if f == stall {
				select {
				case <-time.After(s.stallFor):
				case <-req.Context().Done():
				}
			}
			panic(http.ErrAbortHandler)
		}
		// Counted before it is sent, so the count is complete when the
		// client has the body.
		s.count(path, rec.Code, len(body))
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) count(path string, code, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code/100 == 2 {
		s.bytes += int64(n)
	}
	s.sent[path] += int64(n)
}

func (s *server) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bytes = 0
	s.requests = map[string]int{}
	s.ranges = map[string]int{}
	s.sent = map[string]int64{}
}

// objectRequests counts requests under objects/.
func (s *server) objectRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p, c := range s.requests {
		if strings.HasPrefix(p, "objects/") {
			n += c
		}
	}
	return n
}

func (s *server) sentBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}
