package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/treediff"
)

func init() {
	register("ls", command{
		summary: "list a directory of a commit",
		run:     runLs,
		usage:   usageText(`Usage: cfs-deploy ls [--json] [-R] COMMIT [PATH]`),
	})
	register("cat", command{
		summary: "print a file of a commit",
		run:     runCat,
		usage:   usageText(`Usage: cfs-deploy cat COMMIT PATH`),
	})
	register("diff", command{
		summary: "compare two commits",
		run:     runDiff,
		usage: usageText(`Usage: cfs-deploy diff [--json] A B

Lists paths added (A), removed (D), with changed content (M) or changed
metadata (m: mode, owner, mtime, xattrs, device number, link count) from
commit A to commit B.`),
	})
}

type lsEntry struct {
	Path   string `json:"path"`
	Type   string `json:"type"`
	Mode   string `json:"mode"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Size   uint64 `json:"size"`
	Mtime  string `json:"mtime"`
	Target string `json:"target,omitempty"`
	Object string `json:"object,omitempty"`
	Link   string `json:"hardlink_to,omitempty"`
}

func typeName(n *erofs.Node) string {
	switch n.Type() {
	case erofs.ModeDir:
		return "directory"
	case erofs.ModeReg:
		return "file"
	case erofs.ModeSymlink:
		return "symlink"
	case erofs.ModeChr:
		return "chardev"
	case erofs.ModeBlk:
		return "blockdev"
	case erofs.ModeFifo:
		return "fifo"
	case erofs.ModeSock:
		return "socket"
	}
	return "unknown"
}

func runLs(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	asJSON := fs.Bool("json", false, "")
	recursive := fs.Bool("R", false, "")
	r, ops, err := openForReading(fs, args, 1, 2, "give a commit and optionally a path")
	if err != nil {
		return err
	}
	defer r.Close()
	path := "/"
	if len(ops) == 2 {
		path = ops[1]
	}
	root, err := treeOf(r, ops[0])
	if err != nil {
		return err
	}
	n, err := erofs.Resolve(root, path)
	if err != nil {
		return err
	}
	var entries []lsEntry
	add := func(c *erofs.Node) {
		t := c.Target()
		e := lsEntry{Path: c.Path(), Type: typeName(t), Mode: fmt.Sprintf("%04o", t.Mode&0o7777),
			UID: t.UID, GID: t.GID, Size: t.Size,
			Mtime: time.Unix(t.Mtime.Sec, int64(t.Mtime.Nsec)).UTC().Format(time.RFC3339Nano)}
		if t.IsSymlink() {
			e.Target = t.Payload
		} else if t.IsRegular() && t.Payload != "" {
			e.Object = t.Payload
		}
		if c.LinkTo != nil {
			e.Link = c.LinkTo.Path()
		}
		entries = append(entries, e)
	}
	if !n.Target().IsDir() {
		add(n)
	} else if *recursive {
		erofs.Walk(n, func(c *erofs.Node) error {
			if c != n {
				add(c)
			}
			return nil
		})
	} else {
		for _, c := range n.Children {
			add(c)
		}
	}
	if *asJSON {
		if entries == nil {
			entries = []lsEntry{}
		}
		return printJSON(entries)
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for _, e := range entries {
		extra := ""
		switch {
		case e.Target != "":
			extra = " -> " + erofs.EscapeForLs(e.Target)
		case e.Link != "":
			extra = " => " + erofs.EscapeForLs(e.Link)
		}
		fmt.Fprintf(w, "%-9s %s %5d %5d %12d %s%s\n", e.Type, e.Mode, e.UID, e.GID, e.Size, erofs.EscapeForLs(e.Path), extra)
	}
	return nil
}

func runCat(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	r, ops, err := openForReading(fs, args, 2, 2, "give a commit and a path")
	if err != nil {
		return err
	}
	defer r.Close()
	root, err := treeOf(r, ops[0])
	if err != nil {
		return err
	}
	n, err := erofs.Resolve(root, ops[1])
	if err != nil {
		return err
	}
	f, inline, err := r.ReadFile(n)
	if err != nil {
		return err
	}
	if f == nil {
		_, err = os.Stdout.Write(inline)
		return err
	}
	defer f.Close()
	if _, err := io.Copy(os.Stdout, f); err != nil {
		return fmt.Errorf("cat %s: %w", ops[1], err)
	}
	return nil
}

func runDiff(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	repoFlags(fs)
	asJSON := fs.Bool("json", false, "")
	r, ops, err := openForReading(fs, args, 2, 2, "give two commits")
	if err != nil {
		return err
	}
	defer r.Close()
	var roots [2]*erofs.Node
	for i, name := range ops {
		if roots[i], err = treeOf(r, name); err != nil {
			return err
		}
	}
	changes := treediff.Diff(roots[0], roots[1])
	if *asJSON {
		if changes == nil {
			changes = []treediff.Change{}
		}
		return printJSON(changes)
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	letters := map[treediff.Kind]string{treediff.Added: "A", treediff.Removed: "D",
		treediff.Content: "M", treediff.Metadata: "m", treediff.TypeChg: "T"}
	for _, c := range changes {
		fmt.Fprintf(w, "%s %s", letters[c.Kind], erofs.EscapeForLs(c.Path))
		if len(c.Fields) > 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(c.Fields, ", "))
		}
		w.WriteByte('\n')
	}
	return nil
}
