package repo

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// RepairFromDir replaces the damaged or missing objects rep found that
// images need (rep.Repairable) with files of dir whose content has their
// digest. Only files of a size some such object has are read. It returns
// the objects it put back; run Fsck again for what is left.
func (r *Repo) RepairFromDir(rep *FsckReport, dir string) ([]verity.Digest, error) {
	rp, err := r.newRepairer(rep)
	if err != nil || rp == nil {
		return nil, err
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || len(rp.left) == 0 {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !rp.sizes[fi.Size()] {
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		return rp.try(f, fi.Size(), p)
	})
	if err != nil {
		err = fmt.Errorf("repair from %s: %w", dir, err)
	}
	return rp.finish(err)
}

// RepairFromTar is RepairFromDir for the regular files of a tar stream.
func (r *Repo) RepairFromTar(rep *FsckReport, in io.Reader, name string) ([]verity.Digest, error) {
	rp, err := r.newRepairer(rep)
	if err != nil || rp == nil {
		return nil, err
	}
	tr := tar.NewReader(in)
	for len(rp.left) > 0 {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rp.finish(fmt.Errorf("repair from %s: %w", name, err))
		}
		if h.Typeflag != tar.TypeReg || !rp.sizes[h.Size] {
			continue
		}
		if err := rp.try(tr, h.Size, name+":"+h.Name); err != nil {
			return rp.finish(fmt.Errorf("repair from %s: %w", name, err))
		}
	}
	return rp.finish(nil)
}

// repairer holds what is still to be repaired.
type repairer struct {
	r     *Repo
	left  map[verity.Digest]int64
	sizes map[int64]bool
	done  []verity.Digest
}

func (r *Repo) newRepairer(rep *FsckReport) (*repairer, error) {
	if err := r.writable(); err != nil {
		return nil, err
	}
	if len(rep.repairable) == 0 {
		return nil, nil
	}
	rp := &repairer{r: r, left: map[verity.Digest]int64{}, sizes: map[int64]bool{}}
	for d, size := range rep.repairable {
		rp.left[d] = size
		rp.sizes[size] = true
	}
	return rp, nil
}

// try stores the content of one candidate file if it is an object still
// to be repaired.
func (rp *repairer) try(in io.Reader, size int64, what string) error {
	d, placed, err := rp.r.objects.Replace(in, size, func(d verity.Digest) bool {
		want, ok := rp.left[d]
		return ok && want == size
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if placed {
		delete(rp.left, d)
		rp.done = append(rp.done, d)
	}
	return nil
}

// finish syncs what was repaired, so that it is on disk before anyone is
// told so, and returns it sorted.
func (rp *repairer) finish(err error) ([]verity.Digest, error) {
	if len(rp.done) > 0 {
		if serr := rp.r.objects.Sync(); err == nil {
			err = serr
		}
	}
	sort.Slice(rp.done, func(i, j int) bool { return bytes.Compare(rp.done[i][:], rp.done[j][:]) < 0 })
	return rp.done, err
}
