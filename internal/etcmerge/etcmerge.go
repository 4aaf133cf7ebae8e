// Package etcmerge carries a deployment's local /etc changes into the /etc
// of a new deployment: the three-way merge of the old image's /etc (the
// base), the writable /etc on disk (local) and the new image's /etc.
//
// Diff lists what the local /etc changed against its image, as
// `ostree admin config-diff` does. Merge applies those changes to a fresh
// checkout of the new image's /etc: what the admin changed, added or
// removed stays that way, everything else follows the new image.
//
// The local /etc is a live directory that other processes may change while
// the merge reads it. Nothing is followed through symlinks in it (entries
// are opened relative to their directory with O_NOFOLLOW), and an entry
// that disappears meanwhile counts as deleted instead of failing the merge.
package etcmerge

import (
	"fmt"
	"io"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
)

// Base is an image's /etc as the image describes it: the node of /etc in
// the commit's tree, and a way to read a regular file's content (the
// repository's OpenContent). Open is only called for a file whose content
// lives outside the image and whose fs-verity digest is not recorded.
// A nil Root stands for an image without /etc: an empty directory.
type Base struct {
	Root *erofs.Node
	Open func(*erofs.Node) (io.ReadCloser, error)
}

// Kind is what happened to a path locally.
type Kind int

const (
	Modified Kind = iota + 1 // in the image and on disk, but different
	Added                    // on disk only
	Deleted                  // in the image only
)

// String returns the letter `ostree admin config-diff` prints: M, A or D.
func (k Kind) String() string {
	switch k {
	case Modified:
		return "M"
	case Added:
		return "A"
	case Deleted:
		return "D"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Change is one local change of /etc.
type Change struct {
	Kind Kind
	// Path is relative to /etc, slash-separated ("ssh/sshd_config"); "."
	// is /etc itself.
	Path string
	// TypeChanged says the entry is of another type on disk than in the
	// image (Kind is Modified); What then starts with "type".
	TypeChanged bool
	// What says briefly what differs, comma-separated, for Modified:
	// "type file->dir", "content", "target", "device", "mode", "owner",
	// "xattrs". For Deleted it is "vanished" when the entry disappeared
	// while it was being read. Empty otherwise.
	What string
}

// String formats the change as a config-diff line: "M ssh/sshd_config
// (content, mode)".
func (c Change) String() string {
	if c.What == "" {
		return c.Kind.String() + " " + c.Path
	}
	return c.Kind.String() + " " + c.Path + " (" + c.What + ")"
}

// What values.
const (
	whatContent  = "content"
	whatTarget   = "target"
	whatDevice   = "device"
	whatMode     = "mode"
	whatOwner    = "owner"
	whatXattrs   = "xattrs"
	whatVanished = "vanished"
)

// typeName names a file type (the S_IFMT bits of a mode) in What and in
// conflict reasons.
func typeName(mode uint32) string {
	switch mode & erofs.ModeTypeMask {
	case erofs.ModeReg:
		return "file"
	case erofs.ModeDir:
		return "dir"
	case erofs.ModeSymlink:
		return "symlink"
	case erofs.ModeFifo:
		return "fifo"
	case erofs.ModeSock:
		return "socket"
	case erofs.ModeChr:
		return "chardev"
	case erofs.ModeBlk:
		return "blockdev"
	}
	return fmt.Sprintf("type %#o", mode&erofs.ModeTypeMask)
}

// joinRel appends name to a path relative to /etc.
func joinRel(rel, name string) string {
	if rel == "" || rel == "." {
		return name
	}
	return rel + "/" + name
}

// ignoredXattr says whether an xattr takes no part in comparisons and
// copies: overlayfs keeps its own state under trusted.overlay., and a
// checkout never writes those (they would be misread by an overlay using
// the directory).
func ignoredXattr(key string) bool {
	return strings.HasPrefix(key, "trusted.overlay.")
}
