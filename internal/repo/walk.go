package repo

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// objectFile is one file found under objects/.
type objectFile struct {
	path   string
	digest verity.Digest
	valid  bool // the path is a well-formed object name
	temp   bool // a temporary file of an unfinished write
	size   int64
}

// walkObjects lists objects/: well-formed objects, temporary files, and
// anything else (reported by fsck).
func (r *Repo) walkObjects(fn func(objectFile) error) error {
	top := r.ObjectsDir()
	fans, err := os.ReadDir(top)
	if err != nil {
		return err
	}
	for _, fan := range fans {
		p := filepath.Join(top, fan.Name())
		if !fan.IsDir() {
			if err := fn(objectFile{path: p, temp: isTempName(fan.Name())}); err != nil {
				return err
			}
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range ents {
			of := objectFile{path: filepath.Join(p, e.Name()), temp: isTempName(e.Name())}
			if info, err := e.Info(); err == nil {
				of.size = info.Size()
				if d, err := verity.ParseDigest(fan.Name() + e.Name()); err == nil && len(fan.Name()) == 2 && info.Mode().IsRegular() {
					of.digest, of.valid = d, true
				}
			}
			if err := fn(of); err != nil {
				return err
			}
		}
	}
	return nil
}

func isTempName(name string) bool { return strings.HasPrefix(name, ".") }

// otherTemps lists the temporary files an interrupted write can leave
// outside objects/: index links (images/, commits/), branch files
// (refs/heads/) and image refs (images/refs/, at any depth), and
// meta.json. All are named ".<name>.tmp-<suffix>"; nothing else is taken
// for one.
func (r *Repo) otherTemps() ([]string, error) {
	isTemp := func(name string) bool { return isTempName(name) && strings.Contains(name, ".tmp-") }
	var out []string
	for _, dir := range []string{"", imagesDir, commitsDir} {
		ents, err := os.ReadDir(filepath.Join(r.Path, dir))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if isTemp(e.Name()) && !e.IsDir() && (dir != "" || strings.HasPrefix(e.Name(), "."+metaFile+".tmp-")) {
				out = append(out, filepath.Join(r.Path, dir, e.Name()))
			}
		}
	}
	for _, dir := range []string{headsDir, imageRefsDir} {
		root := filepath.Join(r.Path, dir)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) && p == root {
				return filepath.SkipDir
			}
			if err != nil {
				return err
			}
			if !d.IsDir() && isTemp(d.Name()) {
				out = append(out, p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// treeObjects adds the digests of every object a tree references.
func treeObjects(root *erofs.Node, into map[verity.Digest]bool) {
	erofs.Walk(root, func(n *erofs.Node) error {
		if n.LinkTo == nil && n.IsExternal() && !n.Digest.IsZero() {
			into[n.Digest] = true
		}
		return nil
	})
}
