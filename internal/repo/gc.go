package repo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// GCOptions control GC.
type GCOptions struct {
	DryRun bool
	// Depth keeps this many commits of each branch's history (the tip
	// counts as one); 0 keeps all of it.
	Depth int
	// Roots are extra images to keep (with everything they reference).
	Roots []verity.Digest
}

// GCReport says what GC removed (or would remove).
type GCReport struct {
	Objects     int   `json:"objects"`
	Bytes       int64 `json:"bytes"`
	Images      int   `json:"images"`
	Commits     int   `json:"commits"`
	TempFiles   int   `json:"temp_files"`
	KeptObjects int   `json:"kept_objects"`
	Deployments int   `json:"deployments"`
	DryRun      bool  `json:"dry_run"`
}

// Errors of GC.
var (
	// ErrNeedExclusive is returned by GC on a repository opened shared.
	ErrNeedExclusive = errors.New("gc needs the repository opened exclusively")
	// ErrUnsafeToCollect refuses to collect garbage in a repository whose
	// reachable records cannot all be read: what they reference would go.
	ErrUnsafeToCollect = errors.New("refusing to collect garbage")
	// ErrForeignStreams refuses to collect garbage beside composefs-rs
	// split streams, whose object references this tool cannot read.
	ErrForeignStreams = errors.New("the repository holds composefs-rs streams whose objects cfs-deploy cannot account for")
)

// GC removes objects, images and commits that no branch (down to
// opts.Depth commits), no deployment under <sysroot>/state/deploy and no
// extra root references. It needs the exclusive lock, so no commit is in
// progress: temporary files left by interrupted writes are removed too.
func (r *Repo) GC(opts GCOptions) (*GCReport, error) {
	if !r.exclusive {
		return nil, ErrNeedExclusive
	}
	if !opts.DryRun {
		if err := r.writable(); err != nil {
			return nil, err
		}
	}
	// composefs-rs keeps split streams (OCI layers) whose object
	// references this tool cannot read; collecting would delete them.
	if ents, err := os.ReadDir(filepath.Join(r.Path, "streams")); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%w: %w (%s)", ErrUnsafeToCollect, ErrForeignStreams, filepath.Join(r.Path, "streams"))
	}
	rep := &GCReport{DryRun: opts.DryRun}
	live := map[verity.Digest]bool{}
	liveImages := map[verity.Digest]bool{}
	liveCommits := map[verity.Digest]bool{}
	var newShallow []verity.Digest

	keepImage := func(d verity.Digest) error {
		if liveImages[d] {
			return nil
		}
		img, err := r.ReadImage(d)
		if err != nil {
			return fmt.Errorf("%w: image %s is unreadable: %w", ErrUnsafeToCollect, d, err)
		}
		liveImages[d] = true
		live[d] = true
		treeObjects(img.Root, live)
		return nil
	}

	keepKernel := func(c *Commit) {
		for _, d := range c.Kernel.objects() {
			live[d] = true
		}
	}

	branches, err := r.Branches()
	if err != nil {
		return nil, err
	}
	tips := map[string]verity.Digest{} // branch -> tip's image
	// budget[id] is how many commits, id included, are still kept below
	// id on the deepest walk that reached it (0: all). A commit reached
	// again with a larger budget is walked again, so every branch keeps
	// its own opts.Depth commits even where histories share commits.
	budget := map[verity.Digest]int{}
	parents := map[verity.Digest]verity.Digest{}
	oldShallow := r.shallowCommits()
	for _, b := range branches {
		id, err := r.Branch(b)
		if err != nil {
			return nil, err
		}
		for n := 1; ; n++ {
			c, err := r.ReadCommit(id)
			if err != nil {
				return nil, fmt.Errorf("%w: branch %s: %w", ErrUnsafeToCollect, b, err)
			}
			if n == 1 {
				tips[b] = c.Image
			}
			left := 0
			if opts.Depth > 0 {
				left = opts.Depth - n + 1
			}
			if prev, seen := budget[id]; seen && (prev == 0 || left != 0 && prev >= left) {
				break
			}
			budget[id] = left
			if !liveCommits[id] {
				liveCommits[id] = true
				live[id] = true
				if err := keepImage(c.Image); err != nil {
					return nil, err
				}
				keepKernel(c)
			}
			p := c.Parent
			if p.IsZero() {
				break
			}
			parents[id] = p
			// An earlier gc may have cut the history here.
			if left == 1 || oldShallow[id] && !r.hasCommit(p) {
				break
			}
			id = p
		}
	}
	deployed, deployedCommits, err := r.Deployed()
	if err != nil {
		return nil, err
	}
	rep.Deployments = len(deployed)
	// A deployment keeps the commit it was made from (status and etc-diff
	// read it), even when the branch's kept history no longer reaches it.
	for _, id := range deployedCommits {
		if liveCommits[id] || !r.hasCommit(id) {
			continue
		}
		c, err := r.ReadCommit(id)
		if err != nil {
			return nil, fmt.Errorf("deployed commit %s: %w (run fsck)", id, err)
		}
		liveCommits[id] = true
		live[id] = true
		keepKernel(c)
		if !c.Parent.IsZero() {
			parents[id] = c.Parent
		}
	}
	// Commits whose parent is no longer kept start a shallow history.
	for id, p := range parents {
		if liveCommits[id] && !liveCommits[p] {
			newShallow = append(newShallow, id)
		}
	}

	// What images/refs names is kept, as composefs-rs keeps it; the
	// branch tips' names are brought in step first.
	if !opts.DryRun {
		if err := r.syncBranchImageRefs(tips); err != nil {
			return nil, err
		}
	}
	named, err := r.imageRefs()
	if err != nil {
		return nil, err
	}
	for _, d := range named {
		deployed = append(deployed, d)
	}
	for _, d := range append(deployed, opts.Roots...) {
		if err := keepImage(d); err != nil {
			return nil, err
		}
	}

	remove := func(p string) error {
		if opts.DryRun {
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		return nil
	}
	// The commits whose parents go are recorded first: a crash after this
	// leaves extra names in the list, which fsck accepts, while a crash
	// with parents removed and not listed would leave fsck complaining.
	if !opts.DryRun {
		if err := r.writeShallow(newShallow, liveCommits); err != nil {
			return nil, err
		}
	}
	// Index links before objects, so nothing ever points at a removed
	// object.
	for _, idx := range []struct {
		dir   string
		live  map[verity.Digest]bool
		count *int
	}{{imagesDir, liveImages, &rep.Images}, {commitsDir, liveCommits, &rep.Commits}} {
		ids, err := r.listIndex(idx.dir)
		if err != nil {
			return nil, err
		}
		for _, d := range ids {
			if !idx.live[d] {
				*idx.count++
				if err := remove(filepath.Join(r.Path, idx.dir, d.String())); err != nil {
					return nil, err
				}
			}
		}
	}
	// Signatures go with their commits.
	sigs, err := os.ReadDir(filepath.Join(r.Path, commitsDir))
	if err != nil {
		return nil, err
	}
	for _, e := range sigs {
		hex, ok := strings.CutSuffix(e.Name(), signatureSuffix)
		if d, err := verity.ParseDigest(hex); ok && err == nil && !liveCommits[d] {
			if err := remove(filepath.Join(r.Path, commitsDir, e.Name())); err != nil {
				return nil, err
			}
		}
	}
	temps, err := r.otherTemps()
	if err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	for _, p := range temps {
		rep.TempFiles++
		if err := remove(p); err != nil {
			return nil, err
		}
	}
	err = r.walkObjects(func(of objectFile) error {
		switch {
		case of.temp:
			rep.TempFiles++
			return remove(of.path)
		case !of.valid:
			return nil // not ours to delete; fsck reports it
		case live[of.digest]:
			rep.KeptObjects++
			return nil
		}
		rep.Objects++
		rep.Bytes += of.size
		return remove(of.path)
	})
	if err != nil {
		return nil, err
	}
	if !opts.DryRun {
		if err := r.objects.Sync(); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// writeShallow records commits whose parents gc cut off, keeping earlier
// entries that are still live.
func (r *Repo) writeShallow(add []verity.Digest, liveCommits map[verity.Digest]bool) error {
	all := map[verity.Digest]bool{}
	for d := range r.shallowCommits() {
		if liveCommits[d] {
			all[d] = true
		}
	}
	for _, d := range add {
		all[d] = true
	}
	var lines []string
	for d := range all {
		lines = append(lines, d.String())
	}
	sort.Strings(lines)
	p := filepath.Join(r.Path, shallowFile)
	if len(lines) == 0 {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return atomicfile.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

// Deployed lists the images that deployments on this sysroot use (the
// sysroot's state directories, whether or not a boot entry names them
// yet) and the commits their origin records name.
func (r *Repo) Deployed() ([]verity.Digest, []verity.Digest, error) {
	s := &sysroot.Sysroot{Path: r.Sysroot()}
	images, err := s.ListDeployed()
	if err != nil {
		return nil, nil, err
	}
	var commits []verity.Digest
	for _, img := range images {
		o, err := sysroot.ReadOrigin(s.Deployment(img))
		if err != nil {
			continue // fsck and status report it; its image is kept anyway
		}
		if !o.Commit.IsZero() {
			commits = append(commits, o.Commit)
		}
	}
	return images, commits, nil
}
