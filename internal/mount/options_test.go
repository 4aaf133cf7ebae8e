package mount

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

const testHex = "f2fb7b38e3c5cd01001b0653a0dbf1a632a9359c2bf398a3881b3df0c65b9801"

func TestParseOptions(t *testing.T) {
	dg, err := verity.ParseDigest(testHex)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in     string
		sloppy bool
		want   Options
	}{
		{in: "basedir=/objs", want: Options{ObjectDirs: []string{"/objs"}}},
		{in: "basedir=/a:/b:rel", want: Options{ObjectDirs: []string{"/a", "/b", "rel"}}},
		{in: "basedir=/a,basedir=/b", want: Options{ObjectDirs: []string{"/b"}}},
		{in: ",,basedir=/o,,", want: Options{ObjectDirs: []string{"/o"}}},
		{in: `basedir=/with\,comma`, want: Options{ObjectDirs: []string{"/with,comma"}}},
		{in: `basedir=/back\\slash`, want: Options{ObjectDirs: []string{`/back\slash`}}},
		{in: `basedir=/o,upperdir=/u\,x,workdir=/w\=y`, want: Options{ObjectDirs: []string{"/o"}, UpperDir: "/u,x", WorkDir: "/w=y", ReadWrite: true}},
		{in: "basedir=/o,upperdir=/u,workdir=/w,ro", want: Options{ObjectDirs: []string{"/o"}, UpperDir: "/u", WorkDir: "/w"}},
		{in: "basedir=/o,rw", want: Options{ObjectDirs: []string{"/o"}, ReadWrite: true}},
		{in: "rw,basedir=/o,ro", want: Options{ObjectDirs: []string{"/o"}}},
		{in: "basedir=/o,digest=" + testHex, want: Options{ObjectDirs: []string{"/o"}, ExpectDigest: &dg, RequireVerity: true}},
		{in: "basedir=/o,digest=" + strings.ToUpper(testHex), want: Options{ObjectDirs: []string{"/o"}, ExpectDigest: &dg, RequireVerity: true}},
		{in: "noverity,basedir=/o,digest=" + testHex, want: Options{ObjectDirs: []string{"/o"}, ExpectDigest: &dg}},
		{in: "basedir=/o,digest=" + testHex + ",tryverity", want: Options{ObjectDirs: []string{"/o"}, ExpectDigest: &dg, TryVerity: true}},
		{in: "basedir=/o,verity", want: Options{ObjectDirs: []string{"/o"}, RequireVerity: true}},
		{in: "basedir=/o,verity,noverity", want: Options{ObjectDirs: []string{"/o"}}},
		{in: "basedir=/o,noverity,verity", want: Options{ObjectDirs: []string{"/o"}, RequireVerity: true}},
		{in: "basedir=/o,tryverity", want: Options{ObjectDirs: []string{"/o"}, TryVerity: true}},
		{in: "basedir=/o,idmap=/proc/1/ns/user", want: Options{ObjectDirs: []string{"/o"}, IdmapUserns: "/proc/1/ns/user"}},
		{in: "basedir=/o,nosuid,nodev,noexec", want: Options{ObjectDirs: []string{"/o"}, NoSuid: true, NoDev: true, NoExec: true}},
		{in: "nosuid,suid,basedir=/o", want: Options{ObjectDirs: []string{"/o"}}},
		// What mount(8) and fstab add; accepted, changing nothing.
		{in: "rw,relatime,defaults,noauto,nofail,_netdev,x-systemd.automount,comment=hi,basedir=/o", want: Options{ObjectDirs: []string{"/o"}, ReadWrite: true}},
		{in: "basedir=/o,frobnicate,color=blue", sloppy: true, want: Options{ObjectDirs: []string{"/o"}}},
	}
	for _, c := range cases {
		got, err := ParseOptions(c.in, c.sloppy)
		if err != nil {
			t.Errorf("ParseOptions(%q): %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseOptions(%q) =\n %+v, want\n %+v", c.in, got, c.want)
		}
	}
}

func TestParseOptionsErrors(t *testing.T) {
	cases := []struct{ in, wantMsg string }{
		{"", "basedir= is required"},
		{"ro", "basedir= is required"},
		{"basedir=", `"basedir" needs a value`},
		{"basedir", `"basedir" needs a value`},
		{"basedir=/a::/b", "empty directory"},
		{"basedir=/a:", "empty directory"},
		{"basedir=/o,frobnicate", `unknown option "frobnicate"`},
		{"basedir=/o,color=blue", `unknown option "color=blue"`},
		{"basedir=/o,lowerdir=/x", `unknown option "lowerdir=/x"`},
		{"basedir=/o,digest=abc", "option digest"},
		{"basedir=/o,digest=" + strings.Repeat("g", 64), "option digest"},
		{"basedir=/o,digest=", `"digest" needs a value`},
		{"basedir=/o,verity=yes", `"verity" takes no value`},
		{"basedir=/o,ro=1", `"ro" takes no value`},
		{"basedir=/o,nosuid=1", `"nosuid" takes no value`},
		{"basedir=/o,upperdir", `"upperdir" needs a value`},
		{"basedir=/o,idmap=", `"idmap" needs a value`},
		{`basedir=/o\`, "lone backslash"},
	}
	for _, c := range cases {
		_, err := ParseOptions(c.in, false)
		if err == nil || !strings.Contains(err.Error(), c.wantMsg) {
			t.Errorf("ParseOptions(%q): %v, want an error containing %q", c.in, err, c.wantMsg)
		}
	}
}

func TestParseHelperArgs(t *testing.T) {
	objs := Options{ObjectDirs: []string{"/o"}}
	withImage := func(o Options, img string) Options { o.Image = img; return o }
	cases := []struct {
		args []string
		want HelperArgs
	}{
		{[]string{"img", "/mnt", "-o", "basedir=/o"}, HelperArgs{Options: withImage(objs, "img"), Target: "/mnt"}},
		{[]string{"-t", "composefs", "-o", "basedir=/o", "img", "/mnt"}, HelperArgs{Options: withImage(objs, "img"), Target: "/mnt"}},
		{[]string{"-obasedir=/o", "img", "/mnt"}, HelperArgs{Options: withImage(objs, "img"), Target: "/mnt"}},
		// As mount(8) runs helpers: operands first, then its flags.
		{[]string{"img", "/mnt", "-s", "-f", "-n", "-v", "-o", "rw,basedir=/o,bogus"},
			HelperArgs{Options: withImage(Options{ObjectDirs: []string{"/o"}, ReadWrite: true}, "img"), Target: "/mnt", Fake: true, Verbose: true}},
		{[]string{"img", "/mnt", "-nvo", "basedir=/o"}, HelperArgs{Options: withImage(objs, "img"), Target: "/mnt", Verbose: true}},
		{[]string{"-o", "basedir=/x", "-o", "basedir=/o,ro", "img", "/mnt"}, HelperArgs{Options: withImage(objs, "img"), Target: "/mnt"}},
		{[]string{"-o", "basedir=/o", "--", "-img", "/mnt"}, HelperArgs{Options: withImage(objs, "-img"), Target: "/mnt"}},
		{[]string{"img", "--help"}, HelperArgs{Help: true}},
		{[]string{"-h"}, HelperArgs{Help: true}},
	}
	for _, c := range cases {
		got, err := ParseHelperArgs(c.args)
		if err != nil {
			t.Errorf("ParseHelperArgs(%q): %v", c.args, err)
			continue
		}
		if !reflect.DeepEqual(*got, c.want) {
			t.Errorf("ParseHelperArgs(%q) =\n %+v, want\n %+v", c.args, *got, c.want)
		}
	}
}

func TestParseHelperArgsErrors(t *testing.T) {
	cases := []struct {
		args    []string
		wantMsg string
	}{
		{nil, "expected IMAGE and MOUNTPOINT"},
		{[]string{"img", "-o", "basedir=/o"}, "expected IMAGE and MOUNTPOINT"},
		{[]string{"a", "b", "c", "-o", "basedir=/o"}, "too many operands"},
		{[]string{"", "/mnt", "-o", "basedir=/o"}, "empty IMAGE"},
		{[]string{"img", "/mnt"}, "basedir= is required"},
		{[]string{"img", "/mnt", "-o"}, "-o needs an argument"},
		{[]string{"img", "/mnt", "-t", "overlay", "-o", "basedir=/o"}, `unsupported filesystem type "overlay"`},
		{[]string{"img", "/mnt", "-N", "/proc/1/ns/mnt", "-o", "basedir=/o"}, "-N"},
		{[]string{"img", "/mnt", "-x", "-o", "basedir=/o"}, "unknown option -x"},
		{[]string{"img", "/mnt", "--verbose", "-o", "basedir=/o"}, "unknown option --verbose"},
		{[]string{"img", "/mnt", "-o", "basedir=/o,bogus"}, `unknown option "bogus"`},
		{[]string{"img", "/mnt", "-o", `basedir=/o\`, "-o", "ro"}, "lone backslash"},
	}
	for _, c := range cases {
		_, err := ParseHelperArgs(c.args)
		if err == nil || !strings.Contains(err.Error(), c.wantMsg) {
			t.Errorf("ParseHelperArgs(%q): %v, want an error containing %q", c.args, err, c.wantMsg)
		}
	}
}
