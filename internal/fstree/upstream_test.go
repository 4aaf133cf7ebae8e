package fstree

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/cfs-deploy/cfs-deploy/internal/objstore"
)

// TestMatchesUpstream builds images from the same directories with an
// upstream mkcomposefs (path in $CFS_UPSTREAM_MKCOMPOSEFS) and with Scan
// plus erofs.Write, and requires identical bytes and identical digest
// stores. Without the variable it is skipped.
func TestMatchesUpstream(t *testing.T) {
	mk := os.Getenv("CFS_UPSTREAM_MKCOMPOSEFS")
	if mk == "" {
		t.Skip("set CFS_UPSTREAM_MKCOMPOSEFS to an upstream mkcomposefs to compare with")
	}
	fx := buildTree(t)
	trees := []string{fx.root, filepath.Join(runtime.GOROOT(), "src", "crypto")}
	if !testing.Short() {
		trees = append(trees, runtime.GOROOT())
	}
	cases := []struct {
		args []string
		opts Options
	}{
		{nil, DefaultOptions()},
		{[]string{"--use-epoch"}, Options{UseEpoch: true, InlineMax: 64, ComputeDigests: true}},
		{[]string{"--skip-devices"}, Options{SkipDevices: true, InlineMax: 64, ComputeDigests: true}},
		{[]string{"--skip-xattrs"}, Options{SkipXattrs: true, InlineMax: 64, ComputeDigests: true}},
		{[]string{"--user-xattrs"}, Options{UserXattrs: true, InlineMax: 64, ComputeDigests: true}},
		{[]string{"--digest-store=STORE"}, Options{InlineMax: 64}},
	}
	for _, tree := range trees {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s%v", filepath.Base(tree), tc.args), func(t *testing.T) {
				dir := t.TempDir()
				upImage, upStore := filepath.Join(dir, "up.cfs"), filepath.Join(dir, "up-store")
				args := slices.Clone(tc.args)
				for i, a := range args {
					args[i] = strings.Replace(a, "STORE", upStore, 1)
				}
				if msg, err := exec.Command(mk, append(args, tree, upImage)...).CombinedOutput(); err != nil {
					t.Fatalf("mkcomposefs %v: %v\n%s", args, err, msg)
				}
				want, err := os.ReadFile(upImage)
				must(t, err)

				opts := tc.opts
				ourStore := filepath.Join(dir, "our-store")
				if strings.Contains(strings.Join(tc.args, " "), "--digest-store") {
					st, err := objstore.Open(ourStore, objstore.Options{EnableVerity: true})
					must(t, err)
					defer st.Close()
					opts.Store = st
				}
				root := scan(t, tree, opts)
				var got bytes.Buffer
				must(t, erofs.Write(&got, root, erofs.DefaultWriteOptions))
				if !bytes.Equal(got.Bytes(), want) {
					ourImage := filepath.Join(dir, "our.cfs")
					os.WriteFile(ourImage, got.Bytes(), 0o644)
					t.Fatalf("image differs from mkcomposefs's (%d vs %d bytes)%s", got.Len(), len(want), dumpDiff(mk, upImage, ourImage))
				}
				if opts.Store != nil {
					up, ours := listStore(t, upStore), listStore(t, ourStore)
					if !slices.Equal(up, ours) {
						t.Errorf("digest stores differ: mkcomposefs %d objects, ours %d", len(up), len(ours))
					}
				}
			})
		}
	}
}

// listStore lists the objects of a store with their modes and sizes.
func listStore(t *testing.T, dir string) []string {
	var objs []string
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		must(t, err)
		if d.Type().IsRegular() {
			fi, err := d.Info()
			must(t, err)
			rel, _ := filepath.Rel(dir, p)
			objs = append(objs, fmt.Sprintf("%s %v %d", rel, fi.Mode(), fi.Size()))
		}
		return nil
	}))
	return objs
}

// dumpDiff shows the first lines where composefs-info dumps of the two
// images differ, if composefs-info sits next to mkcomposefs.
func dumpDiff(mk, a, b string) string {
	info := filepath.Join(filepath.Dir(mk), "composefs-info")
	da, err1 := exec.Command(info, "dump", a).Output()
	db, err2 := exec.Command(info, "dump", b).Output()
	if err1 != nil || err2 != nil {
		return ""
	}
	la, lb := strings.Split(string(da), "\n"), strings.Split(string(db), "\n")
	var out strings.Builder
	for i := 0; i < max(len(la), len(lb)) && out.Len() < 2000; i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			fmt.Fprintf(&out, "\n- %s\n+ %s", x, y)
		}
	}
	return out.String()
}
