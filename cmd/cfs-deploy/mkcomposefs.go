package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/cfs-deploy/cfs-deploy/internal/cliutil"
	"github.com/cfs-deploy/cfs-deploy/internal/composefs"
	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/fstree"
	"github.com/cfs-deploy/cfs-deploy/internal/objstore"
)

func init() {
	register("mkcomposefs", command{
		summary: "build a composefs image from a directory or a dump file",
		run:     runMkcomposefs,
		usage:   mkcomposefsUsage,
	})
}

func mkcomposefsUsage(w io.Writer) {
	fmt.Fprintf(w, `Usage: mkcomposefs [OPTIONS] SOURCE IMAGE
       mkcomposefs --print-digest-only [OPTIONS] SOURCE

Writes the composefs image of SOURCE (a directory, or with --from-file a
composefs-dump(5) file, "-" for standard input) to IMAGE ("-" for standard
output). The image is byte-identical to what upstream mkcomposefs writes.
Regular files of 64 bytes or less are stored in the image; larger ones are
referenced by their fs-verity digest as xx/<62 hex>.

Options:
  --digest-store=PATH   copy file contents into PATH under their digest path
  --use-epoch           make all mtimes zero
  --skip-devices        do not store device nodes (nor whiteouts)
  --skip-xattrs         do not store xattrs
  --user-xattrs         store only user.* xattrs
  --hardlinks           keep hard links (upstream drops them; changes the digest)
  --print-digest        print the image's fs-verity digest
  --print-digest-only   print the digest and write no image
  --from-file           SOURCE is a dump file, not a directory
  --min-version=N       lowest format version to use (default 0)
  --max-version=N       highest format version to use (default 1)
  --threads=N           threads for digests and copies (default %d)
`, runtime.NumCPU())
}

func runMkcomposefs(prog string, args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	digestStore := fs.String("digest-store", "", "")
	useEpoch := fs.Bool("use-epoch", false, "")
	skipDevices := fs.Bool("skip-devices", false, "")
	skipXattrs := fs.Bool("skip-xattrs", false, "")
	userXattrs := fs.Bool("user-xattrs", false, "")
	hardlinks := fs.Bool("hardlinks", false, "")
	printDigest := fs.Bool("print-digest", false, "")
	printDigestOnly := fs.Bool("print-digest-only", false, "")
	fromFile := fs.Bool("from-file", false, "")
	minVersion := cliutil.Int(fs, "min-version", 0, 0, erofs.MaxFormatVersion)
	maxVersion := cliutil.Int(fs, "max-version", 0, 0, erofs.MaxFormatVersion)
	threads := cliutil.Int(fs, "threads", runtime.NumCPU(), 1, 1024)
	ops, err := cliutil.Parse(fs, args)
	if err != nil {
		return err
	}
	opts := erofs.DefaultWriteOptions
	if minVersion.Given || maxVersion.Given {
		// As upstream: naming either bound makes the other default to 0.
		opts = erofs.WriteOptions{MinVersion: minVersion.Value, MaxVersion: max(maxVersion.Value, minVersion.Value)}
	}
	if *skipXattrs && *userXattrs {
		return cliutil.Usagef("--skip-xattrs and --user-xattrs conflict")
	}
	switch {
	case len(ops) == 0:
		return cliutil.Usagef("no source path specified")
	case ops[0] == "":
		return cliutil.Usagef("empty source path specified")
	case len(ops) > 2:
		return cliutil.Usagef("too many arguments")
	case len(ops) == 1 && !*printDigestOnly:
		return cliutil.Usagef("no destination path specified")
	case len(ops) == 2 && *printDigestOnly:
		return cliutil.Usagef("cannot specify destination path with --print-digest-only")
	}
	src := ops[0]

	var root *erofs.Node
	if *fromFile {
		root, err = parseDumpSource(src)
	} else {
		sopts := fstree.Options{
			UseEpoch:       *useEpoch,
			SkipDevices:    *skipDevices,
			SkipXattrs:     *skipXattrs,
			UserXattrs:     *userXattrs,
			Hardlinks:      *hardlinks,
			InlineMax:      erofs.RecommendedInlineMax,
			ComputeDigests: true,
			Threads:        threads.Value,
		}
		if *digestStore != "" {
			st, err := objstore.Open(*digestStore, objstore.Options{EnableVerity: true})
			if err != nil {
				return err
			}
			sopts.Store = st
		}
		root, err = fstree.Scan(src, sopts)
		if err == nil && sopts.Store != nil {
			err = sopts.Store.Sync()
		}
	}
	if err != nil {
		return err
	}

	var digest fmt.Stringer
	if *printDigestOnly {
		d, err := composefs.Measure(root, opts)
		if err != nil {
			return err
		}
		digest = d
	} else {
		d, err := composefs.WriteFile(ops[1], root, opts)
		if err != nil {
			return err
		}
		digest = d
	}
	if *printDigest || *printDigestOnly {
		fmt.Println(digest)
	}
	return nil
}

func parseDumpSource(src string) (*erofs.Node, error) {
	in := os.Stdin
	if src != "-" {
		f, err := os.Open(src)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	strict := os.Getenv("CFS_PARSE_STRICT") != ""
	root, err := erofs.ParseDump(in, erofs.DumpOptions{Strict: strict})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return root, nil
}
