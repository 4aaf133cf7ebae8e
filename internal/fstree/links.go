package fstree

import (
	"sync"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
)

// linkTable groups the entries that share an inode. Without
// Options.Hardlinks it only saves hashing a multiply linked file more than
// once; with it, the groups become hard links once the tree is complete.
type linkTable struct {
	keep   bool // Options.Hardlinks
	mu     sync.Mutex
	groups map[linkKey]*linkGroup
}

type linkKey struct{ dev, ino uint64 }

type linkGroup struct {
	first   *erofs.Node   // the member that was added first and is hashed
	members []*erofs.Node // in the order they were found
	primary *erofs.Node   // first in sorted depth-first order
}

func (t *linkTable) init(keep bool) {
	t.keep = keep
	t.groups = make(map[linkKey]*linkGroup)
}

// add records n as a link to inode (dev, ino) and reports whether it is
// the first one recorded.
func (t *linkTable) add(dev, ino uint64, n *erofs.Node) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := linkKey{dev, ino}
	g := t.groups[k]
	if g == nil {
		t.groups[k] = &linkGroup{first: n, members: []*erofs.Node{n}}
		return true
	}
	g.members = append(g.members, n)
	return false
}

// resolve runs on the finished tree. Every member of a group gets the
// digest of the one that was hashed; with keep, the first member in
// depth-first order becomes the inode and the others links to it.
func (t *linkTable) resolve(root *erofs.Node) {
	byNode := make(map[*erofs.Node]*linkGroup)
	for _, g := range t.groups {
		if len(g.members) > 1 {
			for _, m := range g.members {
				byNode[m] = g
			}
		}
	}
	if len(byNode) == 0 {
		return
	}
	erofs.Walk(root, func(n *erofs.Node) error {
		g := byNode[n]
		if g == nil {
			return nil
		}
		if g.primary == nil || !t.keep {
			if g.primary == nil {
				g.primary = n
			}
			if n != g.first && n.Digest.IsZero() && !g.first.Digest.IsZero() {
				n.Digest = g.first.Digest
				n.Payload = g.first.Payload
			}
			if t.keep {
				n.Nlink = uint32(len(g.members))
			}
			return nil
		}
		// A link entry carries its name, mode and target, nothing else,
		// like the links the dump parser and the image reader make.
		*n = erofs.Node{Name: n.Name, Mode: g.primary.Mode, Parent: n.Parent, LinkTo: g.primary}
		return nil
	})
}
