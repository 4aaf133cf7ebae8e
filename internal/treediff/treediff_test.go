package treediff

import (
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/erofs"
	"github.com/google/go-cmp/cmp"
)

func parse(t *testing.T, s string) *erofs.Node {
	t.Helper()
	n, err := erofs.ParseDump(strings.NewReader(s), erofs.DumpOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDiff(t *testing.T) {
	const digA = "35d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408"
	const digB = "45d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408"
	a := parse(t, `/ 4096 40755 2 0 0 0 0.0 - - -
/bin 4096 40755 2 0 0 0 0.0 - - -
/bin/ls 1000 100755 1 0 0 0 0.0 35/d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408 - `+digA+`
/etc 4096 40755 2 0 0 0 0.0 - - -
/etc/hostname 4 100644 1 0 0 0 0.0 - abc\n -
/gone 4096 40755 2 0 0 0 0.0 - - -
/gone/f 0 100644 1 0 0 0 0.0 - - -
/link 3 120777 1 0 0 0 0.0 bin - -
`)
	b := parse(t, `/ 4096 40755 2 0 0 0 0.0 - - -
/bin 4096 40755 2 0 0 0 0.0 - - -
/bin/ls 1000 100755 1 0 0 0 0.0 45/d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408 - `+digB+`
/etc 4096 40700 2 0 0 0 0.0 - - - user.a=b
/etc/hostname 4 100644 1 0 0 0 0.0 - xyz\n -
/link 4 120777 1 0 0 0 0.0 etc2 - -
/new 0 100644 1 0 0 0 0.0 - - -
`)
	want := []Change{
		{Path: "/bin/ls", Kind: Content},
		{Path: "/etc", Kind: Metadata, Fields: []string{"mode 755->700", "xattrs"}},
		{Path: "/etc/hostname", Kind: Content},
		{Path: "/gone", Kind: Removed},
		{Path: "/gone/f", Kind: Removed},
		{Path: "/link", Kind: Content},
		{Path: "/new", Kind: Added},
	}
	if d := cmp.Diff(want, Diff(a, b)); d != "" {
		t.Fatalf("diff (-want +got):\n%s", d)
	}
	c := parse(t, `/ 4096 40700 2 0 0 0 0.0 - - -
`)
	e := parse(t, `/ 4096 40755 2 0 0 0 0.0 - - -
`)
	if got := Diff(c, e); len(got) != 1 || got[0].Path != "/" || got[0].Kind != Metadata {
		t.Fatalf("root chmod: %v", got)
	}
	if got := Diff(a, a); len(got) != 0 {
		t.Fatalf("tree differs from itself: %v", got)
	}
}
