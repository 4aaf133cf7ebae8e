package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

func init() {
	register("composefs-info", command{
		summary: "list, dump or check the objects of composefs images",
		run:     runComposefsInfo,
		usage:   composefsInfoUsage,
	})
	register("digest", command{
		summary: "print the fs-verity digest of files",
		run:     runDigest,
		usage: func(w io.Writer) {
			fmt.Fprintln(w, `Usage: cfs-deploy digest FILE...

Prints "sha256:<digest> FILE" for each file, as "fsverity digest" does: the
kernel's measurement where fs-verity is enabled, else computed.`)
		},
	})
}

func composefsInfoUsage(w io.Writer) {
	fmt.Fprintln(w, `Usage: composefs-info [--basedir=DIR] [--filter=NAME]... COMMAND IMAGE...

Commands:
  ls               list the files of each image
  dump             print each image in composefs-dump(5) format
  objects          list the backing objects the images reference
  missing-objects  list referenced objects absent from --basedir
  measure-file     print the fs-verity digest of each FILE given

Options:
  --basedir=DIR    object store for missing-objects
  --filter=NAME    only this top-level entry (repeatable)`)
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runComposefsInfo(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	basedir := fs.String("basedir", "", "")
	var filters stringList
	fs.Var(&filters, "filter", "")
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	for _, f := range filters {
		if strings.Contains(f, "/") {
			return cliutil.Usagef("filter must be a single name: %s", f)
		}
	}
	if len(ops) == 0 {
		return cliutil.Usagef("no command specified")
	}
	cmd, paths := ops[0], ops[1:]
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	defer out.Flush()
	if cmd == "measure-file" {
		if len(paths) == 0 {
			return cliutil.Usagef("no files specified")
		}
		for _, p := range paths {
			d, err := measureFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintln(out, d)
		}
		return nil
	}
	switch cmd {
	case "ls", "dump", "objects", "missing-objects":
	default:
		return cliutil.Usagef("unknown command %q", cmd)
	}
	if len(paths) == 0 {
		return cliutil.Usagef("no image path specified")
	}
	if cmd == "missing-objects" && *basedir != "" {
		if st, err := os.Stat(*basedir); err != nil || !st.IsDir() {
			return fmt.Errorf("can't open basedir %s: not a directory", *basedir)
		}
	}
	objects := map[string]bool{}
	for _, p := range paths {
		img, err := erofs.ReadImageFile(p)
		if err != nil {
			return fmt.Errorf("load %s: %w", p, err)
		}
		root := filterTopLevel(img.Root, filters)
		switch cmd {
		case "ls":
			listTree(out, root, "")
		case "dump":
			if err := erofs.WriteDump(out, root, erofs.DumpPrintOptions{}); err != nil {
				return err
			}
		case "objects", "missing-objects":
			collectObjects(root, objects, cmd == "missing-objects", *basedir)
		}
	}
	if cmd == "objects" || cmd == "missing-objects" {
		list := make([]string, 0, len(objects))
		for o := range objects {
			list = append(list, o)
		}
		sort.Strings(list)
		for _, o := range list {
			fmt.Fprintln(out, o)
		}
	}
	return out.Flush()
}

// filterTopLevel returns a shallow copy of root holding only the named
// top-level entries (all when names is empty).
func filterTopLevel(root *erofs.Node, names []string) *erofs.Node {
	if len(names) == 0 {
		return root
	}
	keep := map[string]bool{}
	for _, n := range names {
		keep[n] = true
	}
	r := *root
	r.Children = nil
	for _, c := range root.Children {
		if keep[c.Name] {
			r.Children = append(r.Children, c)
		}
	}
	return &r
}

func listTree(w *bufio.Writer, n *erofs.Node, parent string) {
	for _, c := range n.Children {
		path := parent + "/" + c.Name
		w.WriteString(erofs.EscapeForLs(path))
		t := c.Target()
		switch {
		case t.IsDir():
			w.WriteString("/\t")
		case t.IsSymlink():
			w.WriteString("\t-> ")
			w.WriteString(erofs.EscapeField(t.Payload))
		case t.IsRegular() && t.Payload != "":
			w.WriteString("\t@ ")
			w.WriteString(erofs.EscapeField(t.Payload))
		}
		w.WriteByte('\n')
		if c.LinkTo == nil {
			listTree(w, c, path)
		}
	}
}

func collectObjects(root *erofs.Node, into map[string]bool, missingOnly bool, basedir string) {
	erofs.Walk(root, func(n *erofs.Node) error {
		t := n.Target()
		if !t.IsRegular() || t.Payload == "" || into[t.Payload] {
			return nil
		}
		if missingOnly && basedir != "" {
			if _, err := os.Lstat(basedir + "/" + strings.TrimLeft(t.Payload, "/")); err == nil {
				return nil
			}
		}
		into[t.Payload] = true
		return nil
	})
}

func measureFile(path string) (verity.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return verity.Digest{}, err
	}
	defer f.Close()
	d, _, err := verity.MeasureOrCompute(f)
	if err != nil {
		return verity.Digest{}, fmt.Errorf("measure %s: %w", path, err)
	}
	return d, nil
}

func runDigest(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	paths, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cliutil.CheckOperands(paths, 1, -1, "no files specified"); err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for _, p := range paths {
		d, err := measureFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "sha256:%s %s\n", d, p)
	}
	return nil
}
