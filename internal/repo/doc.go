// Package repo is the object repository: file contents, composefs images
// and commit records stored once, named by their fs-verity digest, plus the
// branches that name commits.
//
// On disk (see docs/repository.md for the full description):
//
//	meta.json                 format version, hash algorithm; fs-verity on it marks a secure repository
//	lock                      flock: shared for readers and writers, exclusive for gc
//	objects/XX/<62 hex>       contents, images and commit records
//	images/<64 hex>           -> ../objects/XX/<62 hex>, images this tool wrote
//	images/refs/<name...>     -> images/<64 hex>, relative: names that keep an image (composefs-rs)
//	commits/<64 hex>          -> ../objects/XX/<62 hex>, commit records (JSON)
//	refs/heads/<branch>       the branch's tip commit id and a newline
//	locks/<branch>            flock held while a commit to that branch runs
//	cache/files               (device, inode, size, mtime, ctime) -> digest of committed files
//
// Objects are written to a temporary file, verity is enabled on it, and it
// is renamed into place, so an object name always holds complete content.
// Before anything that makes objects reachable (a commit record, a branch)
// is written, the filesystem is synced once; refs are replaced with
// write-temp, fsync, rename, fsync-directory. A crash at any point leaves
// the old or the new branch tip and a repository fsck accepts.
package repo
