package repo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Problem is one thing fsck found wrong.
type Problem struct {
	Path string `json:"path"`
	What string `json:"problem"`
}

// FsckReport is the result of Fsck.
type FsckReport struct {
	Objects   int `json:"objects"`
	Images    int `json:"images"`
	Commits   int `json:"commits"`
	Branches  int `json:"branches"`
	TempFiles int `json:"temp_files"`
	// Warnings are weaknesses that are not damage, such as a repository
	// directory other users may enter.
	Warnings []string  `json:"warnings"`
	Problems []Problem `json:"problems"`

	// repairable are the objects images need that are damaged or
	// missing, with the size the images give them: what Repair looks
	// for in a copy of the content.
	repairable map[verity.Digest]int64
}

// Repairable is the number of damaged or missing objects that images
// need, which a copy of their content could repair.
func (rep *FsckReport) Repairable() int { return len(rep.repairable) }

// FsckOptions control Fsck.
type FsckOptions struct {
	// Quick skips re-reading object contents: in an insecure repository
	// their digests are then not recomputed (sizes are still checked).
	Quick bool
}

// Fsck checks the whole repository: every object's content matches its
// name, every image parses and references only present objects of the
// right size, every commit and branch resolves.
func (r *Repo) Fsck(opts FsckOptions) (*FsckReport, error) {
	rep := &FsckReport{Problems: []Problem{}, Warnings: []string{}, repairable: map[verity.Digest]int64{}}
	var mu sync.Mutex
	problem := func(path, format string, args ...any) {
		mu.Lock()
		rep.Problems = append(rep.Problems, Problem{path, fmt.Sprintf(format, args...)})
		mu.Unlock()
	}
	damaged := map[verity.Digest]bool{}
	objectProblem := func(d verity.Digest, path, format string, args ...any) {
		problem(path, format, args...)
		mu.Lock()
		damaged[d] = true
		mu.Unlock()
	}
	if err := CheckTopDir(r.Path); errors.Is(err, ErrOpenDirectory) {
		rep.Warnings = append(rep.Warnings, err.Error())
	}
	r.checkPrivateDirs(problem)

	sizes := map[verity.Digest]int64{}
	work := make(chan objectFile)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for of := range work {
				r.checkObject(of, opts, objectProblem)
			}
		}()
	}
	err := r.walkObjects(func(of objectFile) error {
		switch {
		case of.temp:
			rep.TempFiles++
		case !of.valid:
			problem(of.path, "not an object: name is not xx/<62 hex> of a regular file")
		default:
			rep.Objects++
			sizes[of.digest] = of.size
			work <- of
		}
		return nil
	})
	close(work)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("fsck: list objects: %w", err)
	}
	temps, err := r.otherTemps()
	if err != nil {
		return nil, fmt.Errorf("fsck: %w", err)
	}
	rep.TempFiles += len(temps)

	images, err := r.Images()
	if err != nil {
		return nil, err
	}
	rep.Images = len(images)
	goodImages := map[verity.Digest]bool{}
	for _, d := range images {
		if r.checkImage(d, sizes, damaged, rep.repairable, problem) {
			goodImages[d] = true
		}
	}

	commits, err := r.Commits()
	if err != nil {
		return nil, err
	}
	rep.Commits = len(commits)
	shallow := r.shallowCommits()
	for _, id := range commits {
		r.checkCommit(id, sizes, goodImages, shallow, problem)
	}

	branches, err := r.Branches()
	if err != nil {
		return nil, err
	}
	rep.Branches = len(branches)
	refs, err := r.imageRefs()
	if err != nil {
		problem(filepath.Join(r.Path, imageRefsDir), "%v", err)
	}
	for _, b := range branches {
		id, err := r.Branch(b)
		if err != nil {
			problem(r.branchPath(b), "%v", err)
			continue
		}
		if c, err := r.ReadCommit(id); err == nil && refs != nil && refs[BranchImageRefPrefix+b] != c.Image {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s does not name branch %s's image %s: composefs-rs's gc would not keep it",
				r.imageRefPath(BranchImageRefPrefix+b), b, c.Image))
		}
		if _, ok := sizes[id]; !ok {
			problem(r.branchPath(b), "branch %s points at commit %s, which does not exist", b, id)
		} else if !r.hasCommit(id) {
			problem(r.branchPath(b), "branch %s points at %s, which is not an indexed commit", b, id)
		}
	}
	sort.Slice(rep.Problems, func(i, j int) bool { return rep.Problems[i].Path < rep.Problems[j].Path })
	return rep, nil
}

// checkPrivateDirs reports objects/ when other users may enter it: it
// holds every committed file's content. (Its fan-out directories need not
// be checked: nobody else gets past objects/.)
func (r *Repo) checkPrivateDirs(problem func(string, string, ...any)) {
	top := r.ObjectsDir()
	fi, err := os.Stat(top)
	if err != nil {
		return // walking the objects reports it
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		problem(top, "other users may read the objects (mode %04o, want 0700)", m)
	}
}

func (r *Repo) checkObject(of objectFile, opts FsckOptions, objectProblem func(verity.Digest, string, string, ...any)) {
	problem := func(path, format string, args ...any) { objectProblem(of.digest, path, format, args...) }
	f, err := os.Open(of.path)
	if err != nil {
		problem(of.path, "cannot open: %v", err)
		return
	}
	defer f.Close()
	if r.Secure {
		got, err := verity.Measure(f)
		switch {
		case errors.Is(err, verity.ErrNotEnabled):
			problem(of.path, "fs-verity is not enabled on this object")
			return
		case err != nil:
			problem(of.path, "measure: %v", err)
			return
		case got != of.digest:
			problem(of.path, "fs-verity digest is %s, the name says %s", got, of.digest)
			return
		}
		if opts.Quick {
			return
		}
		// Reading every byte through fs-verity finds damaged blocks.
		if _, err := verity.DigestFile(f); err != nil {
			problem(of.path, "content unreadable (damaged data?): %v", err)
		}
		return
	}
	if opts.Quick {
		return
	}
	got, err := verity.DigestFile(f)
	if err != nil {
		problem(of.path, "read: %v", err)
		return
	}
	if got != of.digest {
		problem(of.path, "content digest is %s, the name says %s (changed or truncated)", got, of.digest)
	}
}

// checkImage reports whether the image is usable; the objects it needs
// that are missing, of the wrong size or damaged go to repairable.
func (r *Repo) checkImage(d verity.Digest, sizes map[verity.Digest]int64, damaged map[verity.Digest]bool, repairable map[verity.Digest]int64, problem func(string, string, ...any)) bool {
	link := r.ImagePath(d)
	target, err := os.Readlink(link)
	if err != nil {
		problem(link, "not a symlink to an object: %v", err)
		return false
	}
	if want := filepath.Join("..", objectsDir, d.ObjectPath()); target != want {
		problem(link, "points at %s, expected %s", target, want)
		return false
	}
	if _, ok := sizes[d]; !ok {
		problem(link, "image object %s is missing", d)
		return false
	}
	img, err := r.ReadImage(d)
	if err != nil {
		problem(link, "%v", err)
		return false
	}
	ok := true
	erofs.Walk(img.Root, func(n *erofs.Node) error {
		if n.LinkTo != nil || !n.IsExternal() {
			return nil
		}
		if n.Digest.IsZero() {
			problem(link, "%s: external file without a digest", n.Path())
			ok = false
			return nil
		}
		od := n.Digest
		size, present := sizes[od]
		switch {
		case !present:
			problem(r.ObjectPath(od), "missing; needed by image %s for %s", d, n.Path())
			ok = false
		case uint64(size) != n.Size:
			problem(r.ObjectPath(od), "size %d, image %s says %d for %s (truncated?)", size, d, n.Size, n.Path())
			ok = false
		case damaged[od]:
			// Reported by the object check; the image stays usable
			// once the object is repaired.
		default:
			return nil
		}
		repairable[od] = int64(n.Size)
		return nil
	})
	return ok
}

func (r *Repo) checkCommit(id verity.Digest, sizes map[verity.Digest]int64, goodImages map[verity.Digest]bool, shallow map[verity.Digest]bool, problem func(string, string, ...any)) {
	link := filepath.Join(r.Path, commitsDir, id.String())
	if _, ok := sizes[id]; !ok {
		problem(link, "commit record object is missing")
		return
	}
	c, err := r.ReadCommit(id)
	if err != nil {
		problem(link, "%v", err)
		return
	}
	if !goodImages[c.Image] {
		problem(link, "image %s is missing or damaged", c.Image)
	}
	if !c.Parent.IsZero() && !shallow[id] && !r.hasCommit(c.Parent) {
		problem(link, "parent commit %s is missing", c.Parent)
	}
	for _, d := range c.Kernel.objects() {
		if !hasKey(sizes, d) {
			problem(link, "boot file object %s is missing", d)
		}
	}
}

// shallowFile lists commits whose history gc cut off: their parents may be
// gone.
const shallowFile = "shallow"

func (r *Repo) shallowCommits() map[verity.Digest]bool {
	m := map[verity.Digest]bool{}
	data, err := os.ReadFile(filepath.Join(r.Path, shallowFile))
	if err != nil {
		return m
	}
	for _, line := range strings.Fields(string(data)) {
		if d, err := verity.ParseDigest(line); err == nil {
			m[d] = true
		}
	}
	return m
}

func hasKey(m map[verity.Digest]int64, d verity.Digest) bool {
	_, ok := m[d]
	return ok
}
