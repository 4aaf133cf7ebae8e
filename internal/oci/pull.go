// Package oci moves commits through container registries and OCI image
// layouts: Pull applies an image's layers (OCI whiteout rules) into a tree
// whose files become objects, and commits it with the image's reference
// and manifest digest recorded; Push writes a commit as a one-layer image.
// The registry protocol and credentials are go-containerregistry's.
package oci

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// PullOptions describe one pull of an image.
type PullOptions struct {
	// Ref is the image: docker://..., oci:DIR[:TAG], oci-archive:FILE[:TAG].
	Ref string
	// Branch is the local branch to commit to.
	Branch string
	Access Access
	// Jobs is how many layers are downloaded at once (default 3).
	Jobs int
	// Progress, if set, is called every ProgressInterval (default 200 ms)
	// and at the end, from one goroutine.
	Progress         func(Progress)
	ProgressInterval time.Duration
	// Prepare, if set, transforms the flattened tree before it is
	// committed (pull --prepare-os; see repo.CommitOptions.Prepare). The
	// commit records that it was prepared, so a pull with and one without
	// are not taken for the same.
	Prepare func(root *erofs.Node) (warnings []string, err error)
}

// Progress is a snapshot of a running pull.
type Progress struct {
	Layers     int   // layers to download
	LayersDone int   // of those, applied
	Bytes      int64 // compressed bytes to download
	BytesDone  int64
	Elapsed    time.Duration
}

// PullResult says what a pull did.
type PullResult struct {
	Reference string `json:"reference"`
	Manifest  string `json:"manifest"`
	Config    string `json:"config"`
	Branch    string `json:"branch"`
	Commit    string `json:"commit"`
	Image     string `json:"image"`
	// UpToDate: the branch's tip was made from this manifest already.
	UpToDate      bool    `json:"up_to_date"`
	Layers        int     `json:"layers"`
	LayersFetched int     `json:"layers_fetched"`
	Bytes         int64   `json:"bytes"`
	Objects       int     `json:"objects"`
	NewObjects    int     `json:"new_objects"`
	Seconds       float64 `json:"seconds"`
	// Warnings are problems that did not stop the pull (from Prepare).
	Warnings []string `json:"warnings,omitempty"`
}

// Pull commits the image opts.Ref to opts.Branch of r.
func Pull(ctx context.Context, r *repo.Repo, opts PullOptions) (*PullResult, error) {
	start := time.Now()
	if err := repo.ValidBranchName(opts.Branch); err != nil {
		return nil, err
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 3
	}
	ref, err := ParseRef(opts.Ref)
	if err != nil {
		return nil, err
	}
	img, cleanup, err := openImage(ctx, ref, opts.Access)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	res := &PullResult{Reference: ref.String(), Branch: opts.Branch}
	manifest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", ref, err)
	}
	res.Manifest = manifest.String()
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("%s: configuration: %w", ref, err)
	}
	res.Config = cfgName.String()
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%s: configuration: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("%s: layers: %w", ref, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(layers) {
		return nil, fmt.Errorf("%s: %d layers, but the configuration lists %d diff ids", ref, len(layers), len(cfg.RootFS.DiffIDs))
	}
	res.Layers = len(layers)
	digests := make([]v1.Hash, len(layers))
	for i, l := range layers {
		if digests[i], err = l.Digest(); err != nil {
			return nil, fmt.Errorf("%s: layer %d: %w", ref, i+1, err)
		}
	}

	if tip, err := r.Branch(opts.Branch); err == nil {
		if c, err := r.ReadCommit(tip); err == nil && c.OCI != nil && c.OCI.Manifest == res.Manifest && c.OCI.Prepared == (opts.Prepare != nil) {
			res.UpToDate, res.Commit, res.Image = true, tip.String(), c.Image.String()
			res.Seconds = time.Since(start).Seconds()
			return res, nil
		}
	} else if !errors.Is(err, repo.ErrNoBranch) {
		return nil, err
	}

	// Layers seen before come from the repository; the others are
	// downloaded, several at once.
	trees := make([]*layer, len(layers))
	var fetch []int
	var total int64
	for i := range layers {
		if trees[i] = cachedLayer(r, digests[i]); trees[i] == nil {
			fetch = append(fetch, i)
			if n, err := layers[i].Size(); err == nil {
				total += n
			}
		}
	}
	res.LayersFetched = len(fetch)
	var received atomic.Int64
	var done atomic.Int64
	if opts.Progress != nil {
		stop := progressLoop(opts, func() Progress {
			return Progress{Layers: len(fetch), LayersDone: int(done.Load()), Bytes: total, BytesDone: received.Load(), Elapsed: time.Since(start)}
		})
		defer stop()
	}
	var mu sync.Mutex
	var firstErr error
	newObjects := 0
	sem := make(chan struct{}, opts.Jobs)
	var wg sync.WaitGroup
	for _, i := range fetch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				return
			}
			l, n, err := importLayer(r, layers[i], cfg.RootFS.DiffIDs[i], &received)
			if err == nil {
				err = keepLayer(r, digests[i], l)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: layer %d of %d: %w", ref, i+1, len(layers), err)
				}
				return
			}
			trees[i] = l
			newObjects += n
			done.Add(1)
		}()
	}
	wg.Wait()
	res.Bytes = received.Load()
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}

	root, err := flatten(trees)
	if err != nil {
		return res, fmt.Errorf("%s: %w", ref, err)
	}
	src := &repo.OCISource{Reference: ref.String(), Manifest: res.Manifest, Config: res.Config, Prepared: opts.Prepare != nil}
	for _, d := range digests {
		src.Layers = append(src.Layers, d.String())
	}
	copts := repo.CommitOptions{Branch: opts.Branch, Subject: "pull " + ref.String(), OCI: src, Prepare: opts.Prepare,
		Version: cfg.Config.Labels["org.opencontainers.image.version"]}
	// The image's creation time, not the pull's: every host pulling the
	// same image onto the same history makes the same commit.
	if !cfg.Created.IsZero() {
		copts.Time = cfg.Created.Time
	}
	cr, err := r.CommitRoot(root, newObjects, copts)
	if err != nil {
		return res, err
	}
	res.Commit, res.Image = cr.ID.String(), cr.Image.String()
	// The commit's count: it adds what Prepare stored to the layers'.
	res.Objects, res.NewObjects = cr.Commit.Stats.Objects, cr.Commit.Stats.NewObjects
	res.Warnings = cr.Warnings
	if err := pruneLayers(r); err != nil {
		return res, fmt.Errorf("committed %s, but: %w", cr.ID, err)
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func progressLoop(opts PullOptions, snap func() Progress) (stop func()) {
	every := opts.ProgressInterval
	if every <= 0 {
		every = 200 * time.Millisecond
	}
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
				opts.Progress(snap())
				return
			case <-t.C:
				opts.Progress(snap())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// pruneLayers drops the names of kept layers that no commit in the
// repository was made from, so that gc can collect them once the commits
// that used them are gone.
func pruneLayers(r *repo.Repo) error {
	names, err := r.NamedImages(layerRefPrefix)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return nil
	}
	used := map[string]bool{}
	ids, err := r.Commits()
	if err != nil {
		return err
	}
	for _, id := range ids {
		c, err := r.ReadCommit(id)
		if err != nil {
			return fmt.Errorf("prune layers: %w", err)
		}
		if c.OCI != nil {
			for _, l := range c.OCI.Layers {
				if h, err := v1.NewHash(l); err == nil {
					used[layerRefName(h)] = true
				}
			}
		}
	}
	for _, n := range names {
		if !used[n] {
			if err := r.DeleteNamedImage(n); err != nil {
				return fmt.Errorf("prune layers: %w", err)
			}
		}
	}
	return nil
}
