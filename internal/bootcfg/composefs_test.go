package bootcfg

import (
	"strings"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

const (
	hexA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	hexB = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

func mustDigest(t *testing.T, s string) verity.Digest {
	t.Helper()
	d, err := verity.ParseDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestComposefsRefs(t *testing.T) {
	a, b := mustDigest(t, hexA), mustDigest(t, hexB)
	tests := []struct {
		in   string
		want []ImageRef
	}{
		{"ro quiet", nil},
		{"composefs=" + hexA, []ImageRef{{Digest: a, Source: "composefs=" + hexA}}},
		{"composefs=?" + hexA, []ImageRef{{Digest: a, Insecure: true, Source: "composefs=?" + hexA}}},
		{"composefs=" + strings.ToUpper(hexA), []ImageRef{{Digest: a, Source: "composefs=" + strings.ToUpper(hexA)}}},
		{`composefs="` + hexA + `"`, []ImageRef{{Digest: a, Source: "composefs=" + hexA}}},
		{"composefs.digest=v1-sha256-12:" + hexA,
			[]ImageRef{{Digest: a, Version: 1, Source: "composefs.digest=v1-sha256-12:" + hexA}}},
		{"composefs.digest=?v1-sha256-12:" + hexA,
			[]ImageRef{{Digest: a, Version: 1, Insecure: true, Source: "composefs.digest=?v1-sha256-12:" + hexA}}},
		{"composefs.digest=v2-sha256-12:" + hexA,
			[]ImageRef{{Digest: a, Version: 2, Source: "composefs.digest=v2-sha256-12:" + hexA}}},
		// Every one, in command line order, whatever the spelling.
		{"composefs.digest=v1-sha256-12:" + hexB + " ro composefs=" + hexA, []ImageRef{
			{Digest: b, Version: 1, Source: "composefs.digest=v1-sha256-12:" + hexB},
			{Digest: a, Source: "composefs=" + hexA},
		}},
		// After "--" they are init's arguments, not the kernel's.
		{"composefs=" + hexA + " -- composefs=" + hexB, []ImageRef{{Digest: a, Source: "composefs=" + hexA}}},
		// Similar names are not composefs arguments.
		{"composefs.other=1 xcomposefs=" + hexA, nil},
	}
	for _, tt := range tests {
		got, err := ComposefsRefs(ParseCmdline(tt.in))
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("%q: got %d refs %+v, want %+v", tt.in, len(got), got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%q: ref %d = %+v, want %+v", tt.in, i, got[i], tt.want[i])
			}
		}
	}
}

func TestComposefsRefsErrors(t *testing.T) {
	sha512 := hexA + hexB
	tests := []struct{ arg, wantErr string }{
		{"composefs", "needs a value"},
		{"composefs=", "empty digest"},
		{"composefs=?", "empty digest"},
		{"composefs=abc", "has 3 characters, want 64"},
		{"composefs=" + hexA[:63], "has 63 characters"},
		{"composefs=" + hexA + "0", "has 65 characters"},
		{"composefs=" + hexA[:10] + "g" + hexA[11:], `non-hex character "g" at offset 10`},
		{"composefs=??" + hexA[1:], `non-hex character "?" at offset 0`},
		{"composefs=" + sha512, "SHA-512 digests are not supported"},
		{"composefs.digest=" + hexA, "want composefs.digest=v1-sha256-12:"},
		{"composefs.digest=sha256:" + hexA, `unknown digest algorithm "sha256"`},
		{"composefs.digest=v3-sha256-12:" + hexA, `unknown image format "v3"`},
		{"composefs.digest=v1-sha384-12:" + hexA, `unknown hash "sha384"`},
		{"composefs.digest=v1-sha512-12:" + sha512, "not supported, only sha256"},
		{"composefs.digest=v1-sha256-16:" + hexA, "block size 2^16 is not supported"},
		{"composefs.digest=v1-sha256-12:" + hexA[:32], "has 32 characters"},
		{"composefs.digest=V1-SHA256-12:" + hexA, "unknown image format"},
	}
	for _, tt := range tests {
		// A good argument first: one bad argument fails the lot.
		line := "composefs=" + hexB + " " + tt.arg
		_, err := ComposefsRefs(ParseCmdline(line))
		if err == nil {
			t.Errorf("%q: no error", tt.arg)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tt.wantErr) {
			t.Errorf("%q: error %q does not say %q", tt.arg, msg, tt.wantErr)
		}
		// The message quotes the argument so the operator can find it.
		if !strings.Contains(msg, `"`+shorten(tt.arg)) {
			t.Errorf("%q: error %q does not quote the argument", tt.arg, msg)
		}
	}
}

func TestImageRefArg(t *testing.T) {
	d := mustDigest(t, hexA)
	if got := ComposefsArg(d, false); got != "composefs="+hexA {
		t.Errorf("ComposefsArg = %q", got)
	}
	if got := ComposefsArg(d, true); got != "composefs=?"+hexA {
		t.Errorf("ComposefsArg insecure = %q", got)
	}
	for _, arg := range []string{
		"composefs=" + hexA,
		"composefs=?" + hexA,
		"composefs.digest=v1-sha256-12:" + hexA,
		"composefs.digest=?v2-sha256-12:" + hexA,
	} {
		refs, err := ComposefsRefs(ParseCmdline(arg))
		if err != nil || len(refs) != 1 {
			t.Fatalf("%q: %v %v", arg, refs, err)
		}
		if got := refs[0].Arg(); got != arg {
			t.Errorf("Arg() = %q, want %q", got, arg)
		}
	}
}
