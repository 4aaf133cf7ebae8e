package oci

import (
	"archive/tar"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"golang.org/x/sys/unix"
)

// writeTar writes the tree root of r as a tar stream that, read back as
// one image layer, gives the same tree: a "./" entry for the root, PAX
// headers (nanosecond mtimes, xattrs as SCHILY.xattr records), hard links
// as link entries to the first path of their inode, in the tree's sorted
// order. It refuses what a layer cannot carry: names starting with ".wh."
// (whiteouts to every reader) and sockets.
func writeTar(w io.Writer, r *repo.Repo, root *erofs.Node) error {
	tw := tar.NewWriter(w)
	first := map[*erofs.Node]string{} // inode -> the entry that carries it
	err := erofs.Walk(root, func(n *erofs.Node) error {
		name := "./"
		if n != root {
			name = strings.TrimPrefix(n.Path(), "/")
			if strings.HasPrefix(n.Name, whiteoutPrefix) {
				return fmt.Errorf("%s: a layer cannot carry a file whose name starts with %q (readers take it for a whiteout)", n.Path(), whiteoutPrefix)
			}
		}
		t := n.Target()
		if p, ok := first[t]; ok {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: p, Format: tar.FormatPAX})
		}
		hdr := &tar.Header{
			Name:    name,
			Mode:    int64(t.Mode & 0o7777),
			Uid:     int(t.UID),
			Gid:     int(t.GID),
			ModTime: time.Unix(t.Mtime.Sec, int64(t.Mtime.Nsec)),
			Format:  tar.FormatPAX,
		}
		if len(t.Xattrs) > 0 {
			hdr.PAXRecords = map[string]string{}
			for _, x := range t.Xattrs {
				hdr.PAXRecords["SCHILY.xattr."+x.Key] = x.Value
			}
		}
		switch t.Type() {
		case erofs.ModeDir:
			hdr.Typeflag = tar.TypeDir
			if n != root {
				hdr.Name += "/"
			}
		case erofs.ModeReg:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(t.Size)
			first[t] = name
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			return writeContent(tw, r, n)
		case erofs.ModeSymlink:
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = t.Payload
		case erofs.ModeChr, erofs.ModeBlk:
			hdr.Typeflag = tar.TypeChar
			if t.Type() == erofs.ModeBlk {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor, hdr.Devminor = int64(unix.Major(t.Rdev)), int64(unix.Minor(t.Rdev))
		case erofs.ModeFifo:
			hdr.Typeflag = tar.TypeFifo
		default:
			return fmt.Errorf("%s: a layer cannot carry file type %#o", n.Path(), t.Type())
		}
		if !t.IsDir() {
			first[t] = name
		}
		return tw.WriteHeader(hdr)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func writeContent(w io.Writer, r *repo.Repo, n *erofs.Node) error {
	f, inline, err := r.ReadFile(n)
	if err != nil {
		return err
	}
	if f == nil {
		_, err = w.Write(inline)
		return err
	}
	defer f.Close()
	t := n.Target()
	if _, err := io.CopyN(w, f, int64(t.Size)); err != nil {
		return fmt.Errorf("%s: %w", n.Path(), err)
	}
	return nil
}
