package repo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// Commit is a commit record: one version of a tree on a branch. It is
// stored as a JSON object, and its id is the fs-verity digest of that JSON.
type Commit struct {
	Parent  verity.Digest `json:"parent,omitzero"`
	Time    time.Time     `json:"time"`
	Subject string        `json:"subject,omitempty"`
	Version string        `json:"version,omitempty"`
	Branch  string        `json:"branch,omitempty"`
	// Image is the fs-verity digest of the composefs image: the value of
	// composefs= on the kernel command line.
	Image verity.Digest `json:"image"`
	// Kernel is what the tree holds under /usr/lib/modules/<version>.
	Kernel *Kernel `json:"kernel,omitempty"`
	Stats  Stats   `json:"stats"`
	// OCI says which container image the tree was pulled from.
	OCI *OCISource `json:"oci,omitempty"`
}

// OCISource records the container image a commit was made from: the
// reference as given, the digest of the manifest that was applied (the
// one for linux/amd64 if the reference named an index) and the layers.
type OCISource struct {
	Reference string   `json:"reference"`
	Manifest  string   `json:"manifest"`
	Config    string   `json:"config,omitempty"`
	Layers    []string `json:"layers,omitempty"`
	// Prepared says the tree was prepared as an OS (pull --prepare-os)
	// before it was committed.
	Prepared bool `json:"prepared,omitempty"`
}

// Kernel names the boot files of a commit by object digest.
type Kernel struct {
	Version   string        `json:"version"`
	Vmlinuz   verity.Digest `json:"vmlinuz"`
	Initramfs verity.Digest `json:"initramfs,omitzero"`
}

// objects lists the boot files' objects; none for a nil Kernel.
func (k *Kernel) objects() []verity.Digest {
	if k == nil {
		return nil
	}
	if k.Initramfs.IsZero() {
		return []verity.Digest{k.Vmlinuz}
	}
	return []verity.Digest{k.Vmlinuz, k.Initramfs}
}

// Stats summarise the committed tree.
type Stats struct {
	Entries      int   `json:"entries"`
	Objects      int   `json:"objects"`
	ContentBytes int64 `json:"content_bytes"`
	NewObjects   int   `json:"new_objects"`
}

// ErrNoCommit is returned when a name resolves to no commit.
var ErrNoCommit = errors.New("no such commit")

func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// MaxCommitRecord bounds the size of a commit record read back or
// fetched: records are small JSON objects.
const MaxCommitRecord = 1 << 20

// writeCommit stores a commit record and returns its id and bytes. The
// caller indexes it under commits/ once the object is synced.
func (r *Repo) writeCommit(c *Commit) (verity.Digest, []byte, error) {
	data, err := marshalJSON(c)
	if err != nil {
		return verity.Digest{}, nil, err
	}
	id, _, err := r.objects.PutBytes(data)
	if err != nil {
		return verity.Digest{}, nil, fmt.Errorf("store commit record: %w", err)
	}
	return id, data, nil
}

// ReadCommit loads and checks a commit record.
func (r *Repo) ReadCommit(id verity.Digest) (*Commit, error) {
	data, err := r.CommitRecord(id)
	if err != nil {
		return nil, err
	}
	c, err := ParseCommit(data)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	return c, nil
}

// CommitRecord returns the bytes of a commit record, checked against its
// id: what a signature covers.
func (r *Repo) CommitRecord(id verity.Digest) ([]byte, error) {
	data, err := r.readObject(id, MaxCommitRecord)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("commit %s: %w", id, ErrNoCommit)
	}
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", id, err)
	}
	return data, nil
}

// ParseCommit parses and checks the bytes of a commit record, such as one
// fetched from a remote before it is stored.
func ParseCommit(data []byte) (*Commit, error) {
	var c Commit
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("corrupt record: %w", err)
	}
	// Digests are checked as they are read; the ones that must be there
	// are checked here.
	if c.Image.IsZero() {
		return nil, fmt.Errorf("corrupt record: no image digest")
	}
	if c.Kernel != nil && c.Kernel.Vmlinuz.IsZero() {
		return nil, fmt.Errorf("corrupt record: kernel %s without a vmlinuz digest", c.Kernel.Version)
	}
	return &c, nil
}

// BootObjects lists the objects a commit's kernel record names (vmlinuz
// and initramfs), which the image need not reference.
func (c *Commit) BootObjects() []verity.Digest { return c.Kernel.objects() }

// Commits lists the ids of all commit records indexed in the repository.
func (r *Repo) Commits() ([]verity.Digest, error) {
	return r.listIndex(commitsDir)
}

// Resolve turns a user's name for a commit into its id: a branch name, a
// full commit id, or an unambiguous prefix of at least 6 hex digits. A
// suffix "~N" walks N parents back.
func (r *Repo) Resolve(name string) (verity.Digest, error) {
	back := 0
	if i := strings.LastIndexByte(name, '~'); i > 0 {
		n, err := parseBack(name[i+1:])
		if err != nil {
			return verity.Digest{}, fmt.Errorf("resolve %q: %w", name, err)
		}
		name, back = name[:i], n
	}
	id, err := r.resolveBase(name)
	if err != nil {
		return id, err
	}
	for i := 0; i < back; i++ {
		c, err := r.ReadCommit(id)
		if err != nil {
			return id, err
		}
		p := c.Parent
		if p.IsZero() {
			return id, fmt.Errorf("resolve %q: history has only %d commits", name, i+1)
		}
		id = p
	}
	return id, nil
}

// ErrBadAncestry refuses a ~N suffix that is not a plain decimal number.
var ErrBadAncestry = errors.New("bad ~N suffix: N must be a decimal number of commits to go back")

// parseBack reads the N of "~N": decimal digits only, so that "1x" or
// "0x10" is refused rather than read as 1 or 0.
func parseBack(s string) (int, error) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, ErrBadAncestry
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBadAncestry, err)
	}
	return n, nil
}

func (r *Repo) resolveBase(name string) (verity.Digest, error) {
	if ValidBranchName(name) == nil {
		if id, err := r.Branch(name); err == nil {
			return id, nil
		} else if !errors.Is(err, ErrNoBranch) {
			return id, err
		}
	}
	if d, err := verity.ParseDigest(name); err == nil {
		if r.hasCommit(d) {
			return d, nil
		}
		return d, fmt.Errorf("%s: %w", name, ErrNoCommit)
	}
	if len(name) >= 6 {
		ids, err := r.Commits()
		if err != nil {
			return verity.Digest{}, err
		}
		var match []verity.Digest
		for _, id := range ids {
			if strings.HasPrefix(id.String(), strings.ToLower(name)) {
				match = append(match, id)
			}
		}
		switch len(match) {
		case 1:
			return match[0], nil
		case 0:
		default:
			return verity.Digest{}, fmt.Errorf("%s: ambiguous commit prefix (%d matches)", name, len(match))
		}
	}
	return verity.Digest{}, fmt.Errorf("%s: %w (not a branch, commit id or commit id prefix)", name, ErrNoCommit)
}

// Log returns a commit and its ancestors, newest first, at most max (0 =
// all).
func (r *Repo) Log(id verity.Digest, max int) ([]verity.Digest, []*Commit, error) {
	var ids []verity.Digest
	var commits []*Commit
	seen := map[verity.Digest]bool{}
	shallow := r.shallowCommits()
	for {
		if seen[id] {
			return ids, commits, fmt.Errorf("commit %s: history loops", id)
		}
		seen[id] = true
		c, err := r.ReadCommit(id)
		if err != nil {
			return ids, commits, err
		}
		ids = append(ids, id)
		commits = append(commits, c)
		p := c.Parent
		if p.IsZero() || (max > 0 && len(ids) >= max) || shallow[id] && !r.hasCommit(p) {
			// gc --depth may have cut the history below id.
			return ids, commits, nil
		}
		id = p
	}
}

// HasCommit reports whether the commit id is in the repository (indexed
// under commits/, which happens only once all it references is present).
func (r *Repo) HasCommit(id verity.Digest) bool { return r.hasCommit(id) }

// hasCommit reports whether the commit id is indexed.
func (r *Repo) hasCommit(id verity.Digest) bool {
	_, err := os.Lstat(filepath.Join(r.Path, commitsDir, id.String()))
	return err == nil
}

// indexLink creates dir/<hex> -> ../objects/XX/<rest> unless present.
// Concurrent commits of the same tree create the same link: whoever comes
// second finds it in place.
func (r *Repo) indexLink(dir string, d verity.Digest) error {
	link := filepath.Join(r.Path, dir, d.String())
	if err := replaceSymlink(link, filepath.Join("..", objectsDir, d.ObjectPath())); err != nil {
		return fmt.Errorf("index %s: %w", link, err)
	}
	return nil
}

func (r *Repo) listIndex(dir string) ([]verity.Digest, error) {
	ents, err := os.ReadDir(filepath.Join(r.Path, dir))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var ids []verity.Digest
	for _, e := range ents {
		if d, err := verity.ParseDigest(e.Name()); err == nil {
			ids = append(ids, d)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return bytes.Compare(ids[i][:], ids[j][:]) < 0 })
	return ids, nil
}

// OpenObject opens an object for reading. In a secure repository the
// kernel's fs-verity measurement must equal the name.
func (r *Repo) OpenObject(d verity.Digest) (*os.File, error) {
	f, err := os.Open(r.ObjectPath(d))
	if err != nil {
		return nil, err
	}
	if r.Secure {
		if err := verity.Verify(f, d); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// readObject reads a whole (small) object, refusing ones larger than limit
// and, in an insecure repository, checking the digest in userspace.
func (r *Repo) readObject(d verity.Digest, limit int64) ([]byte, error) {
	f, err := r.OpenObject(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("object %s larger than %d bytes", d, limit)
	}
	if !r.Secure {
		if got := verity.DigestBytes(data); got != d {
			return nil, &verity.MismatchError{Path: r.ObjectPath(d), Want: d, Got: got}
		}
	}
	return data, nil
}
