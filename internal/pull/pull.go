// Package pull fetches commits from a repository published as static
// files (any web server, a file:// URL or a plain path: a mounted disk),
// into a local repository.
//
// A pull reads refs/heads/<branch> for the tip, then the commit record
// (and its parents, down to a depth), its signatures, the image, and
// every object the image and the commit's kernel record name that the
// local repository lacks, several at once. Every file is checked against
// the digest that names it as it streams in, and only stored under that
// name if it matches; a flaky remote is retried with backoff, and a
// transfer that broke off continues with a range request. The local
// branch moves last, once everything is present (repo.AddCommits), so an
// interrupted pull leaves the branch where it was and its objects in
// place for the next try. The published layout is described in
// docs/remotes.md.
package pull

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/internal/sign"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Options describe one pull.
type Options struct {
	// Remote is the published repository: http(s)://, file:// or a path.
	Remote string
	// Branch is the remote branch; Local the local one (default Branch).
	Branch, Local string
	// Depth is how many commits of history to fetch, the tip included
	// (default 1). Fetching stops early at a commit the local repository
	// has.
	Depth int
	// Jobs is how many objects are fetched at once (default 8).
	Jobs int
	// VerifyKeys, if any, must include a key that signed the tip commit;
	// otherwise nothing but the commit record and its signatures is
	// fetched.
	VerifyKeys []ed25519.PublicKey
	// AllowDowngrade accepts a tip older than the local branch's.
	AllowDowngrade bool
	Retry          Retry
	// Client is the HTTP client (default: one made for this pull).
	Client *http.Client
	// Progress, if set, is called every ProgressInterval (default 200 ms)
	// and once at the end, from one goroutine.
	Progress         func(Progress)
	ProgressInterval time.Duration
}

// Progress is a snapshot of a running pull.
type Progress struct {
	Phase        string // "metadata", "objects", "recording"
	Objects      int64  // objects to fetch
	ObjectsDone  int64
	Bytes        int64 // bytes of the objects to fetch
	BytesDone    int64 // bytes received so far (all files)
	Elapsed      time.Duration
	RetriesSoFar int64
}

// Result says what a pull did.
type Result struct {
	Remote      string  `json:"remote"`
	Branch      string  `json:"branch"`
	Local       string  `json:"local_branch"`
	Commit      string  `json:"commit"`
	Image       string  `json:"image"`
	Previous    string  `json:"previous,omitempty"`
	UpToDate    bool    `json:"up_to_date"`
	Commits     int     `json:"commits"`
	Objects     int     `json:"objects"`
	Fetched     int     `json:"fetched_objects"`
	Present     int     `json:"present_objects"`
	ObjectBytes int64   `json:"fetched_object_bytes"`
	Bytes       int64   `json:"bytes"`
	Requests    int64   `json:"requests"`
	Retries     int64   `json:"retries"`
	SignedBy    string  `json:"signed_by,omitempty"`
	Seconds     float64 `json:"seconds"`
}

// maxBootObject bounds an object named only by a commit's kernel record:
// such an object is a boot file small enough to be inline in the image.
const maxBootObject = 1 << 20

// ErrDowngrade refuses a remote tip older than the local branch's tip:
// someone serving an old (validly signed) commit to hold hosts back.
var ErrDowngrade = errors.New("the remote's commit is older than the local branch's")

// ErrNotRepository is returned for a remote without meta.json.
var ErrNotRepository = errors.New("not a published cfs-deploy repository (no meta.json)")

type puller struct {
	r     *repo.Repo
	src   source
	retry Retry
	c     counters

	objTotal, objDone, objBytes atomic.Int64
	phase                       atomic.Value
}

func (o *Options) fill() error {
	if o.Local == "" {
		o.Local = o.Branch
	}
	if o.Depth == 0 {
		o.Depth = 1
	}
	if o.Depth < 0 {
		return fmt.Errorf("depth %d: must be at least 1", o.Depth)
	}
	if o.Jobs <= 0 {
		o.Jobs = 8
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 200 * time.Millisecond
	}
	o.Retry = o.Retry.withDefaults()
	if err := repo.ValidBranchName(o.Branch); err != nil {
		return fmt.Errorf("remote branch: %w", err)
	}
	if err := repo.ValidBranchName(o.Local); err != nil {
		return fmt.Errorf("local branch: %w", err)
	}
	if o.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = o.Jobs + 2
		// A server that accepts the request and never answers costs
		// this long per try; one that stalls mid-body, Retry.Idle.
		t.ResponseHeaderTimeout = max(o.Retry.Idle, 30*time.Second)
		// Objects are fetched byte for byte: no transparent gzip,
		// which would also defeat range requests.
		t.DisableCompression = true
		o.Client = &http.Client{Transport: t}
	}
	return nil
}

// Pull fetches opts.Branch of opts.Remote into r and moves opts.Local to
// it.
func Pull(ctx context.Context, r *repo.Repo, opts Options) (*Result, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	src, err := newSource(opts.Remote, opts.Client, opts.Retry.Idle)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	p := &puller{r: r, src: src, retry: opts.Retry}
	p.phase.Store("metadata")
	if opts.Progress != nil {
		stop := p.reportProgress(opts.Progress, opts.ProgressInterval, start)
		defer stop()
	}
	res := &Result{Remote: src.String(), Branch: opts.Branch, Local: opts.Local}
	err = p.pull(ctx, opts, res)
	res.Bytes, res.Requests, res.Retries = p.c.bytes.Load(), p.c.requests.Load(), p.c.retries.Load()
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		return res, err
	}
	return res, nil
}

func (p *puller) reportProgress(fn func(Progress), every time.Duration, start time.Time) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				fn(p.snapshot(start))
				return
			case <-t.C:
				fn(p.snapshot(start))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (p *puller) snapshot(start time.Time) Progress {
	return Progress{
		Phase:        p.phase.Load().(string),
		Objects:      p.objTotal.Load(),
		ObjectsDone:  p.objDone.Load(),
		Bytes:        p.objBytes.Load(),
		BytesDone:    p.c.bytes.Load(),
		Elapsed:      time.Since(start),
		RetriesSoFar: p.c.retries.Load(),
	}
}

func (p *puller) pull(ctx context.Context, opts Options, res *Result) error {
	r := p.r
	meta, err := p.fetchBytes(ctx, "meta.json", 64<<10)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s: %w", p.src, ErrNotRepository)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p.src, err)
	}
	if _, err := repo.ParseMeta(meta, p.src.String()+"/meta.json"); err != nil {
		return err
	}

	refRel := "refs/heads/" + opts.Branch
	ref, err := p.fetchBytes(ctx, refRel, 1024)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s has no branch %s: %w", p.src, opts.Branch, repo.ErrNoBranch)
	}
	if err != nil {
		return fmt.Errorf("read branch %s: %w", opts.Branch, err)
	}
	tip, err := verity.ParseDigest(string(trimSpace(ref)))
	if err != nil {
		return fmt.Errorf("%s/%s: %w", p.src, refRel, err)
	}
	res.Commit = tip.String()

	old, err := r.Branch(opts.Local)
	hadOld := err == nil
	if err != nil && !errors.Is(err, repo.ErrNoBranch) {
		return err
	}
	if hadOld {
		res.Previous = old.String()
	}

	// The tip's record, in memory until its signature is checked.
	record, err := p.fetchRecord(ctx, tip)
	if err != nil {
		return err
	}
	tipCommit, err := repo.ParseCommit(record)
	if err != nil {
		return fmt.Errorf("commit %s from %s: %w", tip, p.src, err)
	}
	res.Image = tipCommit.Image.String()
	sigs, err := p.fetchBytes(ctx, repo.SignaturePath(tip), repo.MaxSignatureFile)
	if errors.Is(err, ErrNotFound) {
		sigs, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("signatures of commit %s: %w", tip, err)
	}
	if len(opts.VerifyKeys) > 0 {
		k, err := sign.Verify(record, sigs, opts.VerifyKeys)
		if err != nil {
			return fmt.Errorf("commit %s from %s: %w; nothing was fetched", tip, p.src, err)
		}
		res.SignedBy = sign.KeyID(k)
	}
	if hadOld && old == tip {
		res.UpToDate = true
		return p.keepSignatures(tip, sigs)
	}
	if hadOld && !opts.AllowDowngrade {
		if oc, err := r.ReadCommit(old); err == nil && tipCommit.Time.Before(oc.Time) {
			return fmt.Errorf("%w: %s is from %s, local %s (%s) from %s; pull with --allow-downgrade to accept it",
				ErrDowngrade, tip, tipCommit.Time.Format(time.RFC3339), opts.Local, old, oc.Time.Format(time.RFC3339))
		}
	}

	// The chain of commits to add, newest first.
	ids := []verity.Digest{tip}
	commits := []*repo.Commit{tipCommit}
	if _, _, err := r.Objects().PutBytes(record); err != nil {
		return err
	}
	for len(ids) < opts.Depth {
		parent := commits[len(commits)-1].Parent
		ok := !parent.IsZero()
		if !ok {
			break
		}
		if r.HasCommit(parent) {
			break // the history from here on is local already
		}
		rec, err := p.fetchRecord(ctx, parent)
		if errors.Is(err, ErrNotFound) {
			break // the remote's history is shallow here too
		}
		if err != nil {
			return err
		}
		c, err := repo.ParseCommit(rec)
		if err != nil {
			return fmt.Errorf("commit %s from %s: %w", parent, p.src, err)
		}
		if _, _, err := r.Objects().PutBytes(rec); err != nil {
			return err
		}
		ids = append(ids, parent)
		commits = append(commits, c)
	}
	res.Commits = len(ids)

	// Images, then the objects they and the kernel records name.
	need := map[verity.Digest]int64{}
	who := map[verity.Digest]string{}
	for i, c := range commits {
		root, err := p.image(ctx, c.Image)
		if err != nil {
			return fmt.Errorf("commit %s: %w", ids[i], err)
		}
		erofs.Walk(root, func(n *erofs.Node) error {
			if n.LinkTo == nil && n.IsExternal() && !n.Digest.IsZero() {
				d := n.Digest
				if _, ok := need[d]; !ok {
					need[d] = int64(n.Size)
					who[d] = n.Path()
				}
			}
			return nil
		})
		for _, d := range c.BootObjects() {
			if _, ok := need[d]; !ok {
				// Only a boot file inlined in the image (at most 64
				// bytes) is an object the image does not size.
				need[d] = -1
				who[d] = "the kernel record of commit " + ids[i].String()
			}
		}
	}
	res.Objects = len(need)
	var missing []verity.Digest
	var missingBytes int64
	for d, size := range need {
		if r.Objects().Has(d) {
			continue
		}
		missing = append(missing, d)
		missingBytes += max(size, 0)
	}
	res.Present = res.Objects - len(missing)
	res.Fetched = len(missing)
	res.ObjectBytes = missingBytes
	// Largest first: the slowest transfers start early and the tail of
	// the pull is many small ones spread over all workers.
	sort.Slice(missing, func(i, j int) bool {
		if need[missing[i]] != need[missing[j]] {
			return need[missing[i]] > need[missing[j]]
		}
		return string(missing[i][:]) < string(missing[j][:])
	})
	p.objTotal.Store(int64(len(missing)))
	p.objBytes.Store(missingBytes)
	p.phase.Store("objects")
	if err := p.fetchObjects(ctx, missing, need, who, opts.Jobs); err != nil {
		return err
	}

	p.phase.Store("recording")
	if err := p.keepSignatures(tip, sigs); err != nil {
		return err
	}
	return r.AddCommits(ids, repo.AddOptions{Branch: opts.Local, CheckOld: true, Old: old})
}

// fetchRecord fetches a commit record into memory, checked against its id.
func (p *puller) fetchRecord(ctx context.Context, id verity.Digest) ([]byte, error) {
	rel := "objects/" + id.ObjectPath()
	data, err := p.fetchVerified(ctx, rel, repo.MaxCommitRecord, func(b []byte) error {
		if got := verity.DigestBytes(b); got != id {
			return fmt.Errorf("commit %s: the remote sent a record with digest %s", id, got)
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	return data, err
}

// image makes sure image d is in the local store and returns its tree.
func (p *puller) image(ctx context.Context, d verity.Digest) (*erofs.Node, error) {
	if !p.r.Objects().Has(d) {
		_, err := p.storeObject(ctx, "objects/"+d.ObjectPath(), -1, repo.MaxImageSize, func(rd io.Reader) (bool, error) {
			return p.r.Objects().PutVerified(rd, -1, d)
		})
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", d, err)
		}
	}
	img, err := p.r.ReadImage(d)
	if err != nil {
		return nil, err
	}
	return img.Root, nil
}

// fetchObjects fetches objects with jobs workers; the first error stops
// the others.
func (p *puller) fetchObjects(ctx context.Context, objs []verity.Digest, size map[verity.Digest]int64, who map[verity.Digest]string, jobs int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan verity.Digest)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(jobs, max(len(objs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				_, err := p.storeObject(ctx, "objects/"+d.ObjectPath(), size[d], maxBootObject, func(rd io.Reader) (bool, error) {
					return p.r.Objects().PutVerified(rd, size[d], d)
				})
				if err != nil {
					once.Do(func() {
						first = fmt.Errorf("object %s (%s): %w", d, who[d], err)
						cancel(first)
					})
					continue
				}
				p.objDone.Add(1)
			}
		}()
	}
feed:
	for _, d := range objs {
		select {
		case work <- d:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if first != nil {
		return first
	}
	return context.Cause(ctx)
}

// keepSignatures stores the remote's signatures of a commit, merged with
// any the local repository has.
func (p *puller) keepSignatures(id verity.Digest, remote []byte) error {
	if remote == nil {
		return nil
	}
	rf, err := sign.Parse(remote)
	if err != nil {
		return fmt.Errorf("signatures of commit %s from %s: %w", id, p.src, err)
	}
	local, err := p.r.CommitSignatures(id)
	if err == nil {
		lf, err := sign.Parse(local)
		if err == nil {
			for _, s := range rf.Signatures {
				lf.Add(s)
			}
			rf = lf
		}
	} else if !errors.Is(err, repo.ErrNoSignature) {
		return err
	}
	return p.r.SetCommitSignatures(id, rf.Marshal())
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
