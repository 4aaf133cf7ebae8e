package etcmerge

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"golang.org/x/sys/unix"
)

// Note is a remark of the merge about one path (relative to /etc).
type Note struct {
	Path   string
	Reason string
}

// Result is what Merge did.
type Result struct {
	// Changes are the local changes carried into the new /etc, sorted
	// by path. An entry that disappeared while being merged is a Deleted
	// change with What "vanished".
	Changes []Change
	// Conflicts are paths where the local entry and the image disagree
	// on the file type; the local entry was kept.
	Conflicts []Note
	// Skipped are local entries that cannot be carried over (sockets).
	Skipped []Note
	// Vanished are local paths that disappeared while being merged, also
	// inside a directory being copied; they count as deleted.
	Vanished []string
}

// Count returns the number of carried changes of kind k.
func (r *Result) Count(k Kind) int {
	n := 0
	for _, c := range r.Changes {
		if c.Kind == k {
			n++
		}
	}
	return n
}

// String is the one-line summary the CLI prints: "etc merge: 3 modified,
// 1 added, 1 deleted kept; 2 conflicts".
func (r *Result) String() string {
	s := fmt.Sprintf("etc merge: %d modified, %d added, %d deleted kept",
		r.Count(Modified), r.Count(Added), r.Count(Deleted))
	switch n := len(r.Conflicts); {
	case n == 1:
		s += "; 1 conflict"
	case n > 1:
		s += fmt.Sprintf("; %d conflicts", n)
	}
	if n := len(r.Skipped); n > 0 {
		s += fmt.Sprintf("; %d skipped", n)
	}
	if n := len(r.Vanished); n > 0 {
		s += fmt.Sprintf("; %d vanished", n)
	}
	return s
}

// Merge applies the local changes of localDir (against oldBase, as Diff
// finds them) onto dest, which already holds the new image's /etc:
//
//   - a modified or added entry is copied over with its content, mode,
//     owner, xattrs and mtime; an added directory with all inside it; a
//     directory whose metadata alone changed gets that metadata. Missing
//     parents are created with the metadata of the local ones;
//   - a deleted entry is removed from dest;
//   - everything else keeps the new image's version;
//   - where the local entry and the image disagree on the type, because
//     it changed locally or in the new image, the local entry wins and the
//     path is reported as a conflict;
//   - FIFOs and device nodes are copied, sockets skipped and reported;
//   - an entry that disappears meanwhile counts as deleted.
//
// Nothing is followed through symlinks, in localDir or in dest. On error
// dest is left half-merged: the caller discards it.
func Merge(oldBase Base, localDir, dest string) (*Result, error) {
	changes, err := Diff(oldBase, localDir)
	if err != nil {
		return nil, err
	}
	root, err := openRoot(localDir)
	if err != nil {
		return nil, err
	}
	defer root.close()
	var st unix.Stat_t
	if err := unix.Lstat(dest, &st); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: dest, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("%s: not a directory", dest)
	}
	m := &merger{root: root, dest: dest, res: &Result{}, noted: map[string]bool{}}
	for _, c := range changes {
		if err := m.apply(c); err != nil {
			return nil, err
		}
	}
	// Directories get their metadata last: creating entries in them
	// changed their mtimes. The order among them does not matter.
	for _, d := range m.dirs {
		if err := SetMeta(d.path, d.n); err != nil {
			return nil, err
		}
		if d.existed {
			if err := dropOtherXattrs(d.path, d.n.Xattrs); err != nil {
				return nil, err
			}
		}
	}
	byPath := func(a, b Note) int { return strings.Compare(a.Path, b.Path) }
	slices.SortFunc(m.res.Conflicts, byPath)
	slices.SortFunc(m.res.Skipped, byPath)
	slices.Sort(m.res.Vanished)
	return m.res, nil
}

type merger struct {
	root  *localDir
	dest  string
	res   *Result
	noted map[string]bool // paths with a conflict note
	dirs  []destDir       // directories to give metadata at the end
}

type destDir struct {
	path    string
	n       *erofs.Node
	existed bool // dest had it: xattrs the local one lacks must go
}

// conflict notes a conflict at rel, once: a type changed locally may
// also differ from the new image's.
func (m *merger) conflict(rel, format string, args ...any) {
	if !m.noted[rel] {
		m.noted[rel] = true
		m.res.Conflicts = append(m.res.Conflicts, Note{Path: rel, Reason: fmt.Sprintf(format, args...)})
	}
}

func (m *merger) vanished(rel string) {
	m.res.Vanished = append(m.res.Vanished, rel)
}

func (m *merger) destPath(rel string) string { return m.dest + "/" + rel }

// apply carries one change into dest.
func (m *merger) apply(c Change) error {
	if c.Kind == Deleted {
		if c.What == whatVanished {
			m.vanished(c.Path)
		}
		m.res.Changes = append(m.res.Changes, c)
		return m.remove(c.Path)
	}
	for try := 1; ; try++ {
		carried, err := m.carry(c)
		switch {
		case errors.Is(err, errChanged) && try < retries:
			continue
		case errors.Is(err, errVanished):
			m.vanished(c.Path)
			m.res.Changes = append(m.res.Changes, Change{Kind: Deleted, Path: c.Path, What: whatVanished})
			return m.remove(c.Path)
		case err != nil:
			return err
		}
		if carried {
			m.res.Changes = append(m.res.Changes, c)
		}
		return nil
	}
}

// carry copies the local entry of a Modified or Added change into dest. It
// reports false if the entry was skipped.
func (m *merger) carry(c Change) (bool, error) {
	if c.Path == "." {
		// /etc itself: only its metadata can have changed.
		n, err := dirNode(m.root)
		if err != nil {
			return false, err
		}
		m.dirs = append(m.dirs, destDir{m.dest, n, true})
		return true, nil
	}
	parent, destParent, err := m.parents(c.Path)
	if err != nil {
		return false, err
	}
	defer parent.close()
	name := path.Base(c.Path)
	hook(hookCopy, c.Path)
	st, err := parent.lstat(name)
	if err != nil {
		return false, err
	}
	if c.TypeChanged {
		m.conflict(c.Path, "changed locally (%s); the local %s is kept",
			strings.TrimPrefix(c.What, "type "), typeName(st.Mode))
	}
	// A directory that is not new or of a new type brings only its own
	// metadata: what changed inside it are changes of their own.
	recursive := c.Kind == Added || c.TypeChanged
	return m.copy(parent, name, c.Path, destParent+"/"+name, st, recursive)
}

// parents opens the local directories leading to rel and makes sure dest
// has them as directories, creating the missing ones with the local
// metadata. It returns the local parent of rel and its path in dest.
func (m *merger) parents(rel string) (*localDir, string, error) {
	dir, err := m.root.reopen()
	if err != nil {
		return nil, "", err
	}
	destDir := m.dest
	for _, name := range strings.Split(path.Dir(rel), "/") {
		if name == "." {
			break
		}
		sub, err := dir.openDir(name)
		dir.close()
		if errors.Is(err, errChanged) {
			// No longer a directory: what was below is gone.
			err = fmt.Errorf("%w: %w", errVanished, err)
		}
		if err != nil {
			return nil, "", err
		}
		dir = sub
		destDir += "/" + name
		if err := m.ensureDir(dir, destDir); err != nil {
			dir.close()
			return nil, "", err
		}
	}
	return dir, destDir, nil
}

// ensureDir makes destPath a directory with the metadata of the local ld
// unless it is one already.
func (m *merger) ensureDir(ld *localDir, destPath string) error {
	var st unix.Stat_t
	err := unix.Lstat(destPath, &st)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return nil
	case err == nil:
		m.conflict(ld.rel, "the new image has a %s here; the local dir is kept", typeName(st.Mode))
		if err := os.RemoveAll(destPath); err != nil {
			return err
		}
	case err != unix.ENOENT:
		return &os.PathError{Op: "lstat", Path: destPath, Err: err}
	}
	n, err := dirNode(ld)
	if err != nil {
		return err
	}
	if err := unix.Mkdir(destPath, 0o700); err != nil {
		return &os.PathError{Op: "mkdir", Path: destPath, Err: err}
	}
	m.dirs = append(m.dirs, destDir{destPath, n, false})
	return nil
}

// dirNode returns the metadata of an open local directory.
func dirNode(ld *localDir) (*erofs.Node, error) {
	var st unix.Stat_t
	if err := unix.Fstat(ld.fd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: ld.path, Err: err}
	}
	n := statNode(path.Base(ld.path), &st)
	xs, err := readXattrs(ld.fd, ld.path)
	if err != nil {
		return nil, err
	}
	n.Xattrs = xs
	return n, nil
}

// remove deletes rel from dest, if dest has it below directories (a
// symlink among its parents means it is not there).
func (m *merger) remove(rel string) error {
	p := m.dest
	for _, name := range strings.Split(path.Dir(rel), "/") {
		if name == "." {
			break
		}
		p += "/" + name
		var st unix.Stat_t
		err := unix.Lstat(p, &st)
		if err == unix.ENOENT || err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil
		}
		if err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
	}
	// RemoveAll removes a symlink, never what it points to.
	return os.RemoveAll(m.destPath(rel))
}
