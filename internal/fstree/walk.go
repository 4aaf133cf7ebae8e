package fstree

import (
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"golang.org/x/sys/unix"
)

// The scan is a pool of workers sharing two job lists: directories to
// list and files to hash. A directory job opens the directory relative to
// its parent's descriptor, records every entry and queues its
// subdirectories and the files that need hashing; a file job opens the
// file relative to its directory's descriptor. Directory descriptors are
// reference counted and closed when the last job that needs them ends.
type scanner struct {
	opts    Options
	root    string
	digests bool // hash big regular files
	rootDev uint64

	mu     sync.Mutex
	cond   sync.Cond
	dirs   []job // LIFO: depth first keeps few directories open
	files  []job
	big    []job // files of bigFileSize and more, hashed before the others
	active int   // jobs being processed
	err    error
	failed atomic.Bool

	openDirs atomic.Int32

	links linkTable

	started time.Time // for the digest cache's racy-file rule

	nEntries atomic.Int64
	nBytes   atomic.Int64
	nCached  atomic.Int64 // files whose digest came from the cache

	noNoatime atomic.Bool // O_NOATIME refused with EPERM: stop asking
	xattrs    xattrCaps
}

type job struct {
	dir   *dirHandle // the directory the entry is in; nil for the root
	node  *erofs.Node
	size  int64   // of a file to hash
	key   FileKey // for the digest cache
	cache bool    // remember the digest under key
}

// dirHandle is an open directory that jobs refer to.
type dirHandle struct {
	fd   int
	path string
	refs atomic.Int32
	s    *scanner
}

func (d *dirHandle) release() {
	if d.refs.Add(-1) == 0 {
		unix.Close(d.fd)
		d.s.openDirs.Add(-1)
	}
}

// maxOpenDirs bounds the directory descriptors held open: beyond it,
// workers prefer hashing queued files (which releases directories) to
// listing more directories.
const maxOpenDirs = 256

// bigFileSize is the size from which files are hashed first, so that the
// end of the scan has only small files left to spread over the workers.
const bigFileSize = 1 << 20

func newScanner(root string, opts Options) *scanner {
	s := &scanner{
		opts:    opts,
		root:    filepath.Clean(root),
		digests: opts.ComputeDigests || opts.Store != nil,
		started: time.Now(),
	}
	s.cond.L = &s.mu
	s.links.init(opts.Hardlinks)
	return s
}

func (s *scanner) run() (*erofs.Node, error) {
	rootNode := &erofs.Node{}
	s.dirs = append(s.dirs, job{node: rootNode})

	stopProgress := s.startProgress()
	var wg sync.WaitGroup
	for range s.opts.Threads {
		wg.Go(func() {
			w := newWorker(s)
			for {
				j, isDir, ok := s.next()
				if !ok {
					return
				}
				var err error
				var newDirs, newFiles []job
				if isDir {
					newDirs, newFiles, err = w.scanDir(j)
				} else {
					err = w.hashFile(j)
				}
				s.done(newDirs, newFiles, err)
			}
		})
	}
	wg.Wait()
	stopProgress()
	if s.err != nil {
		return nil, s.err
	}
	s.links.resolve(rootNode)
	return rootNode, nil
}

// next hands out the next job, waiting while other workers may still
// produce some. ok is false when the scan is over.
func (s *scanner) next() (j job, isDir, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.err != nil {
			// Drop queued work, releasing the directories it holds.
			for _, j := range s.dirs {
				if j.dir != nil {
					j.dir.release()
				}
			}
			for _, j := range s.files {
				j.dir.release()
			}
			for _, j := range s.big {
				j.dir.release()
			}
			s.dirs, s.files, s.big = nil, nil, nil
		}
		nd, nf := len(s.dirs), len(s.files)+len(s.big)
		if nd > 0 && (nf == 0 || s.openDirs.Load() < maxOpenDirs) {
			j = s.dirs[nd-1]
			s.dirs = s.dirs[:nd-1]
			s.active++
			return j, true, true
		}
		if nb := len(s.big); nb > 0 {
			j = s.big[nb-1]
			s.big = s.big[:nb-1]
			s.active++
			return j, false, true
		}
		if n := len(s.files); n > 0 {
			j = s.files[n-1]
			s.files = s.files[:n-1]
			s.active++
			return j, false, true
		}
		if s.active == 0 {
			s.cond.Broadcast()
			return job{}, false, false
		}
		s.cond.Wait()
	}
}

// done records the result of a job and queues the jobs it produced.
func (s *scanner) done(dirs, files []job, err error) {
	s.mu.Lock()
	s.active--
	if err != nil && s.err == nil {
		s.err = err
		s.failed.Store(true)
	}
	s.dirs = append(s.dirs, dirs...)
	for _, f := range files {
		if f.size >= bigFileSize {
			s.big = append(s.big, f)
		} else {
			s.files = append(s.files, f)
		}
	}
	wake := len(dirs)+len(files) > 1 || s.active == 0 || err != nil
	s.mu.Unlock()
	if wake {
		s.cond.Broadcast()
	} else if len(dirs)+len(files) == 1 {
		s.cond.Signal()
	}
}

func (s *scanner) startProgress() (stop func()) {
	if s.opts.Progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.opts.Progress(s.nEntries.Load(), s.nBytes.Load())
			case <-quit:
				return
			}
		}
	})
	return func() {
		close(quit)
		wg.Wait()
		s.opts.Progress(s.nEntries.Load(), s.nBytes.Load())
	}
}
