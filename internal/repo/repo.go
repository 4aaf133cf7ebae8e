package repo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cfs-deploy/cfs-deploy/internal/atomicfile"
	"github.com/cfs-deploy/cfs-deploy/internal/filelock"

	"github.com/cfs-deploy/cfs-deploy/internal/objstore"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// Repo is an open repository. Open holds a shared lock until Close, which
// keeps gc (exclusive) away while the repository is in use.
type Repo struct {
	Path   string
	Secure bool // meta.json carries fs-verity: every object must too

	meta      Meta
	lock      *os.File // nil on a read-only filesystem
	exclusive bool
	readOnly  string // why this version must not change the repository
	objects   *objstore.Store
	// verifyExisting: objects are hashed before they are reused (an
	// insecure repository, unless OpenOptions.TrustExisting).
	verifyExisting bool
}

// ErrNotRepository is returned by Open for a directory without meta.json.
var ErrNotRepository = errors.New("not a cfs-deploy repository (no meta.json)")

// ErrNoVerity refuses a secure repository on a filesystem without fs-verity.
var ErrNoVerity = errors.New("the filesystem cannot do fs-verity, which a secure repository needs")

const (
	metaFile   = "meta.json"
	lockFile   = "lock"
	objectsDir = "objects"
	imagesDir  = "images"
	commitsDir = "commits"
	headsDir   = "refs/heads"
	locksDir   = "locks"
	cacheDir   = "cache"
)

// InitOptions controls Init.
type InitOptions struct {
	// Insecure creates a repository that works on any filesystem and
	// computes digests in userspace. Secure repositories need fs-verity.
	Insecure bool
}

// Init creates a repository at path. The directory may exist but must not
// hold a repository already. On failure nothing Init created is left.
func Init(path string, opts InitOptions) error {
	if _, err := os.Stat(filepath.Join(path, metaFile)); err == nil {
		return fmt.Errorf("init %s: a repository already exists there", path)
	}
	// The highest directory Init creates, if any: on failure it goes,
	// with everything below it.
	created := firstMissing(path)
	if created != "" {
		if err := os.MkdirAll(path, 0o700); err != nil {
			os.RemoveAll(created)
			return fmt.Errorf("init %s: %w", path, err)
		}
	}
	made := []string{}
	cleanup := func() {
		if created != "" {
			os.RemoveAll(created)
			return
		}
		for i := len(made) - 1; i >= 0; i-- {
			os.RemoveAll(filepath.Join(path, made[i]))
		}
	}
	for _, d := range []string{objectsDir, imagesDir, commitsDir, "refs", headsDir, locksDir, cacheDir} {
		if err := os.Mkdir(filepath.Join(path, d), dirMode(d)); err != nil && !errors.Is(err, os.ErrExist) {
			cleanup()
			return fmt.Errorf("init %s: %w", path, err)
		} else if err == nil {
			made = append(made, d)
		}
	}
	if err := os.WriteFile(filepath.Join(path, lockFile), nil, 0o600); err != nil {
		cleanup()
		return fmt.Errorf("init %s: %w", path, err)
	}
	made = append(made, lockFile)
	if err := writeMeta(path, newMeta(!opts.Insecure), !opts.Insecure); err != nil {
		cleanup()
		return fmt.Errorf("init %s: %w", path, err)
	}
	return nil
}

// dirMode is the mode Init gives a directory of the repository. Objects
// hold the contents of every committed file, whatever its mode was, and
// the digest cache names the files that were committed: both are for
// root only, whether or not the repository's own directory is open.
func dirMode(d string) os.FileMode {
	if d == objectsDir || d == cacheDir {
		return 0o700
	}
	return 0o755
}

// ErrOpenDirectory says that a repository's own directory lets other
// users in. Objects stay private (objects/ is 0700), but branch names,
// commit records' names and the layout are visible.
var ErrOpenDirectory = errors.New("repository directory is accessible to other users")

// CheckTopDir returns an error wrapping ErrOpenDirectory when group or
// others have any access to the repository directory path.
func CheckTopDir(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s: %w (mode %04o)", path, ErrOpenDirectory, m)
	}
	return nil
}

// firstMissing returns the highest of path and its parents that does not
// exist, "" if path exists.
func firstMissing(path string) string {
	missing := ""
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			return missing
		}
		missing = p
		if filepath.Dir(p) == p {
			return missing
		}
	}
}

// writeMeta writes meta.json through a temporary file; with secure set it
// enables fs-verity on it first, which is what marks the repository secure.
func writeMeta(path string, m Meta, secure bool) error {
	data, err := marshalJSON(m)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(path, ".meta.json.tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	tmp.Close()
	if secure {
		ro, err := os.Open(tmp.Name())
		if err != nil {
			return err
		}
		err = verity.Enable(ro)
		ro.Close()
		if errors.Is(err, verity.ErrUnsupported) {
			return ErrNoVerity
		}
		if err != nil {
			return fmt.Errorf("enable fs-verity on %s: %w", metaFile, err)
		}
	}
	if err := os.Rename(tmp.Name(), filepath.Join(path, metaFile)); err != nil {
		return err
	}
	return atomicfile.SyncDir(path)
}

// OpenOptions controls Open.
type OpenOptions struct {
	// Exclusive takes the repository lock exclusively (gc).
	Exclusive bool
	// TrustExisting, in a repository without fs-verity, reuses objects
	// that are already there (and of the right size) without reading
	// them: faster commits, but a damaged object is not noticed, nor
	// replaced. A secure repository has the kernel check them either way.
	TrustExisting bool
}

// Open opens the repository at path and takes its lock (shared unless
// opts.Exclusive), waiting for an exclusive holder to finish.
func Open(path string, opts OpenOptions) (*Repo, error) {
	meta, err := readMeta(filepath.Join(path, metaFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open repository %s: %w", path, ErrNotRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", path, err)
	}
	secure, err := metaIsSecure(filepath.Join(path, metaFile))
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", path, err)
	}
	if meta.has(featureSecure) && !secure {
		return nil, fmt.Errorf("open repository %s: %w", path, ErrLostVerity)
	}
	lf, err := openLock(filepath.Join(path, lockFile))
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", path, err)
	}
	how := unix.LOCK_SH
	if opts.Exclusive {
		how = unix.LOCK_EX
	}
	if lf == nil {
		// A read-only filesystem: nobody can change the repository, so
		// there is nothing to lock against.
	} else if err := filelock.Flock(lf, how); err != nil {
		lf.Close()
		return nil, fmt.Errorf("lock repository %s: %w", path, err)
	}
	st, err := objstore.Open(filepath.Join(path, objectsDir), objstore.Options{
		EnableVerity: true, RequireVerity: secure, Private: true,
		VerifyExisting: !secure && !opts.TrustExisting,
	})
	if err != nil {
		if lf != nil {
			lf.Close()
		}
		return nil, fmt.Errorf("open repository %s: %w", path, err)
	}
	r := &Repo{Path: path, Secure: secure, meta: meta, lock: lf, exclusive: opts.Exclusive, objects: st,
		verifyExisting: !secure && !opts.TrustExisting}
	if unknown := meta.unknownReadOnly(); len(unknown) > 0 {
		r.readOnly = fmt.Sprintf("it has read-only-compatible features this version does not know: %v", unknown)
	}
	return r, nil
}

// ErrLostVerity refuses a repository created secure whose meta.json no
// longer carries fs-verity.
var ErrLostVerity = errors.New("the repository was created secure, but meta.json has no fs-verity (replaced, or copied to a filesystem without fs-verity); refusing to use it as an insecure repository")

// ErrReadOnly is returned by operations that would change a repository
// this version may only read.
var ErrReadOnly = errors.New("repository is read-only for this version of cfs-deploy")

// writable refuses changes to a repository with unknown read-only
// features.
func (r *Repo) writable() error {
	if r.readOnly != "" {
		return fmt.Errorf("%w: %s", ErrReadOnly, r.readOnly)
	}
	return nil
}

// openLock opens the lock file read-only (flock needs no write access, so
// read commands work on a read-only mount), creating it if it is missing.
// It returns nil, nil on a read-only filesystem without a lock file.
func openLock(path string) (*os.File, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
		if errors.Is(err, unix.EROFS) {
			return nil, nil
		}
	}
	return f, err
}

// metaIsSecure reports whether meta.json has fs-verity enabled.
func metaIsSecure(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = verity.Measure(f)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, verity.ErrNotEnabled), errors.Is(err, verity.ErrUnsupported):
		return false, nil
	}
	return false, err
}

// Mode describes the repository's security mode for messages.
func (r *Repo) Mode() string {
	if r.Secure {
		return "secure: objects are protected by fs-verity"
	}
	return "insecure: no fs-verity, digests are computed in userspace"
}

// Close releases the repository lock.
func (r *Repo) Close() error {
	if r.objects != nil {
		r.objects.Close()
	}
	if r.lock == nil {
		return nil
	}
	err := r.lock.Close()
	r.lock = nil
	return err
}

// Objects is the repository's object store.
func (r *Repo) Objects() *objstore.Store { return r.objects }

// ObjectsDir is the directory overlayfs uses as the data-only lower layer.
func (r *Repo) ObjectsDir() string { return filepath.Join(r.Path, objectsDir) }

// ObjectPath is where the object with digest d lives.
func (r *Repo) ObjectPath(d verity.Digest) string {
	return filepath.Join(r.Path, objectsDir, d.ObjectPath())
}

// Sysroot is the directory that holds the repository (and state/).
func (r *Repo) Sysroot() string { return filepath.Dir(filepath.Clean(r.Path)) }
