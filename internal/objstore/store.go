// Package objstore keeps a content-addressed directory of file objects,
// each named by the fs-verity digest of its content: DIR/xx/<62 hex>, the
// layout `mkcomposefs --digest-store` writes and overlayfs reads as a
// data-only lower layer.
//
// An object becomes visible under its final name only once it is complete:
// it is written to a temporary file in DIR, made read-only (mode 0644, and
// fs-verity when asked), and renamed into place. A private store (a
// repository's) keeps its directories 0700. Objects are never
// fsynced one by one; call Sync once before recording anything that makes
// them reachable.
package objstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"golang.org/x/sys/unix"
)

// Options controls how new objects are written.
type Options struct {
	// EnableVerity tries FS_IOC_ENABLE_VERITY on every new object. If the
	// filesystem cannot do fs-verity the object is stored without it, as
	// mkcomposefs does, and no further attempts are made.
	EnableVerity bool
	// RequireVerity makes storing an object fail unless fs-verity could be
	// enabled on it. An object that already exists gets verity enabled if
	// it lacks it, and must measure as its name says. It implies
	// EnableVerity.
	RequireVerity bool
	// VerifyExisting checks an object that is already there before it is
	// reused: unless the kernel's fs-verity measurement vouches for it,
	// its content is hashed, and a copy that does not match its name is
	// replaced by the new one. Without it an existing object of the right
	// size is trusted, which is what fs-verity (RequireVerity) makes safe;
	// without fs-verity it is the price of not reading every object.
	VerifyExisting bool
	// Private keeps the contents from other users whatever the modes of
	// the store's parents: the directory and its fan-out directories are
	// 0700 (a looser store directory is tightened when it is opened).
	// Objects stay 0644, so that what was world-readable in the tree is
	// no less readable through a mount; the directories decide who gets
	// to them. Without it the store has upstream's modes, 0755 and 0644.
	Private bool
}

// Store is an object directory. It is safe for concurrent use.
type Store struct {
	dir  string
	dfd  int // the directory, for *at calls and syncfs
	opts Options

	noVerity atomic.Bool // the filesystem refused verity once; stop asking
	tmpSeq   atomic.Uint64
	created  atomic.Int64 // objects this Store put in place
	// checked remembers what Verify found per digest (nil: intact), so
	// that an object is read once per Store however often it is reused.
	checked sync.Map
	pid     int // in temporary file names
	// fanOut[i] records that the fan-out directory of first byte i
	// exists, saving a mkdir per object.
	fanOut [256]atomic.Bool
}

// ErrDamaged marks an object whose content does not have the digest it is
// named by.
var ErrDamaged = errors.New("object content does not match its name")

// Modes of the directories (shared or private) and of the objects.
const (
	sharedDirMode  = 0o755
	privateDirMode = 0o700
	objectMode     = 0o644
)

// Open opens the object directory dir, creating it (and its parents) if
// it does not exist.
func Open(dir string, opts Options) (*Store, error) {
	if opts.RequireVerity {
		opts.EnableVerity = true
	}
	if err := os.MkdirAll(dir, os.FileMode(opts.dirMode())); err != nil {
		return nil, fmt.Errorf("open object store: %w", err)
	}
	if opts.Private {
		if err := tighten(dir); err != nil {
			return nil, fmt.Errorf("open object store: %w", err)
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", dir, err)
	}
	return &Store{dir: dir, dfd: fd, opts: opts, pid: os.Getpid()}, nil
}

// Close releases the store's directory descriptor. It does not sync.
func (s *Store) Close() error {
	if s.dfd < 0 {
		return nil
	}
	err := unix.Close(s.dfd)
	s.dfd = -1
	if err != nil {
		return fmt.Errorf("close object store %s: %w", s.dir, err)
	}
	return nil
}

// Dir returns the directory the store was opened on.
func (s *Store) Dir() string { return s.dir }

// Path returns where the object with digest d lives (whether or not it
// exists).
func (s *Store) Path(d verity.Digest) string {
	return filepath.Join(s.dir, d.ObjectPath())
}

// Has reports whether the object with digest d exists.
func (s *Store) Has(d verity.Digest) bool {
	ok, _, _ := s.exists(d.ObjectPath())
	return ok
}

// Reusable reports whether the object d is there to be referenced without
// storing it again: it exists and, with VerifyExisting, is intact.
func (s *Store) Reusable(d verity.Digest) bool {
	if !s.opts.VerifyExisting {
		return s.Has(d)
	}
	return s.Verify(d) == nil
}

// Verify checks that the object d exists and that its content has digest
// d: by the kernel's fs-verity measurement if the object has fs-verity,
// else by hashing it. It returns nil, or an error wrapping os.ErrNotExist
// or ErrDamaged. Results are remembered for the life of the Store.
func (s *Store) Verify(d verity.Digest) error {
	if v, ok := s.checked.Load(d); ok {
		err, _ := v.(error)
		return err
	}
	err := s.verify(d)
	if err == nil || errors.Is(err, ErrDamaged) {
		s.checked.Store(d, err)
	}
	return err
}

func (s *Store) verify(d verity.Digest) error {
	rel := d.ObjectPath()
	fd, err := unix.Openat(s.dfd, rel, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("object %s: %w", d, os.ErrNotExist)
		}
		return fmt.Errorf("open object %s: %w", filepath.Join(s.dir, rel), err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(s.dir, rel))
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("object %s: not a regular file (%v)", f.Name(), err)
	}
	got, _, err := verity.MeasureOrCompute(f)
	switch {
	case errors.Is(err, unix.EIO):
		// fs-verity refused to read a damaged block.
		return fmt.Errorf("object %s: %w: %v", f.Name(), ErrDamaged, err)
	case err != nil:
		return fmt.Errorf("object %s: %w", f.Name(), err)
	case got != d:
		return fmt.Errorf("object %s: %w (its content has digest %s)", f.Name(), ErrDamaged, got)
	}
	return nil
}

// Size returns the size of the object with digest d, and false if there
// is none.
func (s *Store) Size(d verity.Digest) (int64, bool, error) {
	ok, n, err := s.exists(d.ObjectPath())
	return n, ok, err
}

// exists reports whether rel names a regular file in the store. Anything
// else under an object's name is an error: nothing this package writes
// could have put it there.
func (s *Store) exists(rel string) (bool, int64, error) {
	var st unix.Stat_t
	err := unix.Fstatat(s.dfd, rel, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG:
		return true, st.Size, nil
	case err == nil:
		return false, 0, fmt.Errorf("%s exists and is not a regular file", filepath.Join(s.dir, rel))
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		// ENOTDIR: something else where the fan-out directory should be;
		// creating the object will fail and say so.
		return false, 0, nil
	default:
		return false, 0, fmt.Errorf("stat %s: %w", filepath.Join(s.dir, rel), err)
	}
}

// Sync flushes everything written to the store's filesystem with one
// syncfs(2). Callers run it after a batch of puts and before anything
// that refers to the new objects is written.
func (s *Store) Sync() error {
	if err := unix.Syncfs(s.dfd); err != nil {
		return fmt.Errorf("sync object store %s: %w", s.dir, err)
	}
	return nil
}

// PutFile stores the first size bytes of src as the object d. The caller
// vouches that d is the fs-verity digest of that content (it usually has
// just computed it from the same descriptor); src's file offset is not
// used or moved. created is false if the object already existed,
// including when a concurrent writer stored it first.
//
// The copy is made by the kernel where it can be (reflink or
// copy_file_range). When fs-verity is enabled on the object, the kernel's
// measurement is compared with d, which is free and is what later reads
// are checked against; without fs-verity the copy is hashed again, since
// the source may have changed after the caller hashed it.
func (s *Store) PutFile(src *os.File, size int64, d verity.Digest) (created bool, err error) {
	if size < 0 {
		return false, fmt.Errorf("store object %s: negative size %d", d, size)
	}
	return s.put(d, size, false, func(dst *os.File) error { return copyFile(dst, src, size) })
}

// PutBytes stores b and returns its digest. created is false if the object
// already existed.
func (s *Store) PutBytes(b []byte) (verity.Digest, bool, error) {
	d := verity.DigestBytes(b)
	created, err := s.put(d, int64(len(b)), true, func(dst *os.File) error {
		_, err := dst.Write(b)
		return err
	})
	return d, created, err
}

// PutReader stores the content read from r, which must be exactly size
// bytes, and returns its digest: the bytes are hashed as they are written,
// so they are read once and written once. created is false if the object
// already existed; the new copy is then dropped.
//
// The digest is only known at the end, so the temporary file is written
// at the top of the store and renamed across directories; that suits one
// stream at a time, such as a tar import, rather than parallel writers.
func (s *Store) PutReader(r io.Reader, size int64) (d verity.Digest, created bool, err error) {
	tmp, d, err := s.writeHashed(r, size)
	if err != nil {
		return d, false, err
	}
	rel := d.ObjectPath()
	have, replace, err := s.have(rel, d, size)
	if err == nil && !have {
		err = s.mkdirFanOut(rel)
	}
	if have || err != nil {
		unix.Unlinkat(s.dfd, tmp, 0)
		return d, false, wrapPut(s, rel, err)
	}
	created, err = s.place(tmp, rel, d, replace, true)
	return d, created, err
}

// writeHashed copies size bytes from r into a temporary file at the top of
// the store, hashing them on the way, and returns its name and digest.
func (s *Store) writeHashed(r io.Reader, size int64) (string, verity.Digest, error) {
	if size < 0 {
		return "", verity.Digest{}, fmt.Errorf("store object: negative size %d", size)
	}
	h := verity.NewHasher()
	tmp, err := s.writeTemp(".", func(dst *os.File) error {
		n, err := io.Copy(io.MultiWriter(dst, h), r)
		if err == nil && n != size {
			err = fmt.Errorf("content is %d bytes, expected %d", n, size)
		}
		return err
	})
	if err != nil {
		return "", verity.Digest{}, fmt.Errorf("store object: %w", err)
	}
	return tmp, h.Sum(), nil
}

// ErrDigestMismatch is returned by PutVerified when the content read does
// not have the digest it was promised to have (or not the promised size).
var ErrDigestMismatch = errors.New("content does not match its digest")

// PutVerified stores the content read from r as the object want: the bytes
// are hashed as they are written to a temporary file, and only if their
// fs-verity digest is want (and, when size >= 0, there are exactly size of
// them) is the file renamed into place. Anything else is removed again and
// reported with ErrDigestMismatch; read errors from r are returned wrapped,
// so callers can tell a broken connection from bad content. If the object
// already exists nothing is read and created is false.
//
// This is how content from an untrusted source (a remote repository, a
// registry) enters the store: nothing unverified ever carries an object's
// name. Unlike PutReader it writes in the object's fan-out directory, so
// many can run in parallel.
func (s *Store) PutVerified(r io.Reader, size int64, want verity.Digest) (created bool, err error) {
	rel := want.ObjectPath()
	have, replace, err := s.have(rel, want, size)
	if have || err != nil {
		return false, wrapPut(s, rel, err)
	}
	if err := s.mkdirFanOut(rel); err != nil {
		return false, wrapPut(s, rel, err)
	}
	h := verity.NewHasher()
	tmp, err := s.writeTemp(rel[:2], func(dst *os.File) error {
		src := r
		if size >= 0 {
			// One byte more than promised shows a body that is too long.
			src = io.LimitReader(r, size+1)
		}
		n, err := io.Copy(io.MultiWriter(dst, h), src)
		if err != nil {
			return err
		}
		if size >= 0 && n != size {
			return fmt.Errorf("%w: got %d bytes, expected %d", ErrDigestMismatch, n, size)
		}
		if got := h.Sum(); got != want {
			return fmt.Errorf("%w: content has digest %s", ErrDigestMismatch, got)
		}
		return nil
	})
	if err != nil {
		return false, wrapPut(s, rel, err)
	}
	return s.place(tmp, rel, want, replace, true)
}

// put writes a new object d of size bytes with fill unless it already
// exists. hashed says that fill writes bytes d was computed from, so the
// result need not be hashed again.
func (s *Store) put(d verity.Digest, size int64, hashed bool, fill func(dst *os.File) error) (bool, error) {
	rel := d.ObjectPath()
	have, replace, err := s.have(rel, d, size)
	if have || err != nil {
		return false, wrapPut(s, rel, err)
	}
	if err := s.mkdirFanOut(rel); err != nil {
		return false, wrapPut(s, rel, err)
	}
	// The temporary file lives in the object's own fan-out directory:
	// a rename within one directory does not take the filesystem-wide
	// lock that renames across directories serialise on, which made two
	// workers storing in parallel slower than one.
	tmp, err := s.writeTemp(rel[:2], fill)
	if err != nil {
		return false, wrapPut(s, rel, err)
	}
	return s.place(tmp, rel, d, replace, hashed)
}

// have reports whether the object d of size bytes is already in place. An
// existing object of the wrong size was damaged (a crash before the data
// reached the disk, say): it is not had, and replace says to rename over
// it.
func (s *Store) have(rel string, d verity.Digest, size int64) (have, replace bool, err error) {
	ok, n, err := s.exists(rel)
	if err != nil || !ok {
		return false, false, err
	}
	if size >= 0 && n != size { // size < 0: not known to the caller
		return false, true, nil
	}
	if s.opts.RequireVerity {
		// An object stored before verity was required: enable it now,
		// and let the kernel confirm the content.
		_, err = s.enableVerity(rel, d)
		return err == nil, false, err
	}
	if s.opts.VerifyExisting {
		switch err := s.Verify(d); {
		case errors.Is(err, ErrDamaged):
			return false, true, nil
		case err != nil:
			return false, false, err
		}
	}
	return true, false, nil
}

func (o Options) dirMode() uint32 {
	if o.Private {
		return privateDirMode
	}
	return sharedDirMode
}

// tighten makes dir 0700 if group or others have any access. A store on a
// read-only filesystem, or one this user does not own, is left as it is
// (it cannot be written either); fsck reports it.
func tighten(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	if st.Mode&0o077 == 0 {
		return nil
	}
	err := unix.Chmod(dir, privateDirMode)
	if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EPERM) {
		return nil
	}
	return err
}

func (s *Store) mkdirFanOut(rel string) error {
	i, ok := fanOutIndex(rel)
	if ok && s.fanOut[i].Load() {
		return nil
	}
	if err := unix.Mkdirat(s.dfd, rel[:2], s.opts.dirMode()); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create directory: %w", err)
	}
	if ok {
		s.fanOut[i].Store(true)
	}
	return nil
}

// fanOutIndex returns the first byte an object path ("xx/...") names.
func fanOutIndex(rel string) (int, bool) {
	hex := func(c byte) (int, bool) {
		switch {
		case c >= '0' && c <= '9':
			return int(c - '0'), true
		case c >= 'a' && c <= 'f':
			return int(c-'a') + 10, true
		}
		return 0, false
	}
	hi, ok1 := hex(rel[0])
	lo, ok2 := hex(rel[1])
	return hi<<4 | lo, ok1 && ok2
}

// place commits the temporary file tmp as rel, removing it on error.
func (s *Store) place(tmp, rel string, d verity.Digest, replace, hashed bool) (bool, error) {
	created, err := s.commit(tmp, rel, d, replace, hashed)
	if err != nil {
		unix.Unlinkat(s.dfd, tmp, 0)
		return false, wrapPut(s, rel, err)
	}
	return created, nil
}

func wrapPut(s *Store, rel string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store object %s: %w", filepath.Join(s.dir, rel), err)
}

// writeTemp creates a temporary file in the store's subdirectory dir, fills
// it and closes it with the object's final mode. It returns the file's name
// relative to the store; on error nothing is left behind.
func (s *Store) writeTemp(dir string, fill func(dst *os.File) error) (string, error) {
	var (
		name string
		fd   int
		err  error
	)
	for {
		name = fmt.Sprintf("%s/.tmp-%d-%d", dir, s.pid, s.tmpSeq.Add(1))
		fd, err = unix.Openat(s.dfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.ENOENT) && dir != "." {
			// The fan-out directory went away (removed by hand?)
			// after it was seen: make it again.
			if i, ok := fanOutIndex(dir); ok && s.fanOut[i].Swap(false) {
				if err = s.mkdirFanOut(dir + "/"); err == nil {
					continue
				}
			}
		}
		if !errors.Is(err, unix.EEXIST) { // left by a crashed run with our pid
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("create temporary file: %w", err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(s.dir, name))
	err = fill(f)
	if err != nil {
		err = fmt.Errorf("write %s: %w", f.Name(), err)
	} else {
		err = f.Chmod(objectMode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(s.dfd, name, 0)
		return "", err
	}
	return name, nil
}

// commit checks the finished temporary file against d — by the kernel's
// fs-verity measurement where verity could be enabled, else by hashing
// the copy, since the source may have changed after it was hashed, unless
// hashed says the bytes were hashed as they were written — and renames it
// to rel. It reports false when another writer won the race. With replace
// it renames over an existing (damaged) object.
func (s *Store) commit(tmp, rel string, d verity.Digest, replace, hashed bool) (bool, error) {
	measured := false
	if s.opts.RequireVerity || s.opts.EnableVerity && !s.noVerity.Load() {
		var err error
		if measured, err = s.enableVerity(tmp, d); err != nil {
			return false, err
		}
	}
	if !measured && !hashed {
		got, err := verity.DigestPath(filepath.Join(s.dir, tmp))
		if err != nil {
			return false, fmt.Errorf("check the copy: %w", err)
		}
		if got != d {
			return false, fmt.Errorf("copy has digest %s, not %s: %w", got, d, errSourceChanged)
		}
	}
	var err error
	if replace {
		err = unix.Renameat(s.dfd, tmp, s.dfd, rel)
	} else {
		err = unix.Renameat2(s.dfd, tmp, s.dfd, rel, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			// The filesystem cannot refuse to replace. Replacing an
			// object with a copy of itself is harmless.
			err = unix.Renameat(s.dfd, tmp, s.dfd, rel)
		}
	}
	if errors.Is(err, unix.EEXIST) {
		unix.Unlinkat(s.dfd, tmp, 0)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("rename into place: %w", err)
	}
	s.checked.Store(d, nil) // what was just checked and placed
	s.created.Add(1)
	return true, nil
}

// Replace reads size bytes from r and, if their digest is one that want
// accepts, puts them in place of that object, whatever is there now (a
// damaged copy, or nothing): it is how a damaged object is repaired from
// a copy of the content. Content want does not accept is dropped. It
// returns the digest and whether it was put in place.
func (s *Store) Replace(r io.Reader, size int64, want func(verity.Digest) bool) (verity.Digest, bool, error) {
	tmp, d, err := s.writeHashed(r, size)
	if err != nil {
		return d, false, err
	}
	rel := d.ObjectPath()
	if !want(d) {
		unix.Unlinkat(s.dfd, tmp, 0)
		return d, false, nil
	}
	if err := s.mkdirFanOut(rel); err != nil {
		unix.Unlinkat(s.dfd, tmp, 0)
		return d, false, wrapPut(s, rel, err)
	}
	placed, err := s.place(tmp, rel, d, true, true)
	return d, placed, err
}

// Created is the number of objects this Store has added so far.
func (s *Store) Created() int64 { return s.created.Load() }

// enableVerity turns on fs-verity for the file rel, which must not be
// open for writing, and checks the kernel's measurement against d. A file
// that already has verity is only measured.
func (s *Store) enableVerity(rel string, d verity.Digest) (measured bool, err error) {
	fd, err := unix.Openat(s.dfd, rel, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false, fmt.Errorf("reopen for fs-verity: %w", err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(s.dir, rel))
	defer f.Close()
	if err := verity.Enable(f); err != nil {
		if s.opts.RequireVerity {
			return false, err
		}
		if errors.Is(err, verity.ErrUnsupported) {
			s.noVerity.Store(true)
		}
		return false, nil // best effort, as mkcomposefs does
	}
	got, err := verity.Measure(f)
	if err != nil {
		return false, err
	}
	if got != d {
		return false, &verity.MismatchError{Path: f.Name(), Want: d, Got: got}
	}
	return true, nil
}
