package oci

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cfs-deploy/cfs-deploy/internal/repo"
	"github.com/cfs-deploy/cfs-deploy/tests/registrytest"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func pushImage(t testing.TB, ref string, img v1.Image) {
	t.Helper()
	n, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(n, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// TestRegistry runs the registry scenarios against one real registry.
func TestRegistry(t *testing.T) {
	reg := registrytest.Start(t)
	proxy := registrytest.NewProxy(t, reg)
	flat := flatImage(t, flatEntries())
	ls := testLayers()
	l1, l2 := layerOf(t, ls[0], gz), layerOf(t, ls[1], zst)

	t.Run("layers", func(t *testing.T) {
		pushImage(t, reg.Host+"/test/os:1", imageOf(t, l1, l2, layerOf(t, ls[2], plain)))
		r := newRepo(t)
		res := pull(t, r, "docker://"+proxy.Host+"/test/os:1", "os")
		if res.Image != flat {
			t.Fatalf("image %s, the flattened tree committed directly: %s", res.Image, flat)
		}
		fsckClean(t, r)
		first := proxy.Blobs()
		if len(first) != 4 { // three layers and the configuration
			t.Errorf("first pull fetched blobs %v", first)
		}

		// A new tag: the top layer changed. Only it (and the new
		// configuration) is downloaded.
		top := append(ls[2][:len(ls[2]):len(ls[2])], entry{name: "etc/motd", body: "hello\n"})
		l3 := layerOf(t, top, gz)
		img2 := imageOf(t, l1, l2, l3)
		pushImage(t, reg.Host+"/test/os:2", img2)
		res2 := pull(t, r, "docker://"+proxy.Host+"/test/os:2", "os")
		blobs := proxy.Blobs()
		d3, _ := l3.Digest()
		cfg, _ := img2.ConfigName()
		size3, _ := l3.Size()
		if len(blobs) != 2 || blobs[d3.String()] != size3 || blobs[cfg.String()] == 0 {
			t.Errorf("second pull fetched %v; want only layer %s (%d bytes) and config %s", blobs, d3, size3, cfg)
		}
		if res2.LayersFetched != 1 {
			t.Errorf("second pull: %d layers fetched", res2.LayersFetched)
		}
		want := flatImage(t, append(flatEntries(), entry{name: "etc/motd", body: "hello\n"}))
		if res2.Image != want {
			t.Errorf("second image %s, want %s", res2.Image, want)
		}
		fsckClean(t, r)
	})

	t.Run("index", func(t *testing.T) {
		// A multi-arch index: the host takes linux/amd64.
		arm := imageOf(t, layerOf(t, []entry{{name: "arm", body: "arm64\n"}}, gz))
		amd := imageOf(t, l1, l2, layerOf(t, ls[2], gz))
		idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
			mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
			mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
		n, _ := name.ParseReference(reg.Host + "/test/multi:1")
		if err := remote.WriteIndex(n, idx); err != nil {
			t.Fatal(err)
		}
		r := newRepo(t)
		res := pull(t, r, "docker://"+reg.Host+"/test/multi:1", "os")
		amdDigest, _ := amd.Digest()
		if res.Image != flat || res.Manifest != amdDigest.String() {
			t.Errorf("index pull: image %s manifest %s; want %s from %s", res.Image, res.Manifest, flat, amdDigest)
		}
		// By digest, too.
		idxDigest, _ := idx.Digest()
		res = pull(t, r, "docker://"+reg.Host+"/test/multi@"+idxDigest.String(), "bydigest")
		if res.Image != flat {
			t.Errorf("pull by digest: image %s", res.Image)
		}
	})

	t.Run("push and skopeo", func(t *testing.T) {
		if _, err := exec.LookPath("skopeo"); err != nil {
			if os.Getenv("CFS_DEPLOY_REGISTRY_REQUIRED") != "" {
				t.Fatal("skopeo not installed")
			}
			t.Skip("skopeo not installed")
		}
		build := newRepo(t)
		orig, err := build.CommitTar(bytes.NewReader(tarOf(t, flatEntries())), "flat", repo.CommitOptions{Branch: "build"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Push(context.Background(), build, orig.ID, PushOptions{Ref: "docker://" + reg.Host + "/test/built:1"}); err != nil {
			t.Fatal(err)
		}
		host := newRepo(t)
		if res := pull(t, host, "docker://"+reg.Host+"/test/built:1", "os"); res.Image != orig.Image.String() {
			t.Errorf("pushed commit pulled back: image %s, original %s", res.Image, orig.Image)
		}

		// skopeo copies it out to an archive and in again under another
		// name; both pulls give the original image.
		work := t.TempDir()
		archive := filepath.Join(work, "os.tar")
		skopeo(t, "copy", "--src-tls-verify=false", "docker://"+reg.Host+"/test/built:1", "oci-archive:"+archive+":stable")
		if res := pull(t, host, "oci-archive:"+archive+":stable", "from-archive"); res.Image != orig.Image.String() {
			t.Errorf("oci-archive pull: image %s, original %s", res.Image, orig.Image)
		}
		layoutDir := filepath.Join(work, "layout")
		skopeo(t, "copy", "oci-archive:"+archive+":stable", "oci:"+layoutDir+":stable")
		skopeo(t, "copy", "--dest-tls-verify=false", "oci:"+layoutDir+":stable", "docker://"+reg.Host+"/test/copied:stable")
		fresh := newRepo(t)
		if res := pull(t, fresh, "docker://"+reg.Host+"/test/copied:stable", "os"); res.Image != orig.Image.String() {
			t.Errorf("image copied in by skopeo: image %s, original %s", res.Image, orig.Image)
		}
		fsckClean(t, fresh)
	})
}

func skopeo(t *testing.T, args ...string) {
	t.Helper()
	policy := filepath.Join(t.TempDir(), "policy.json")
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644)
	cmd := exec.Command("skopeo", append([]string{"--policy", policy, "--insecure-policy"}, args...)...)
	// skopeo must not read the host's registry configuration or
	// credentials.
	cmd.Env = append(os.Environ(), "REGISTRY_AUTH_FILE="+filepath.Join(t.TempDir(), "auth.json"), "CONTAINERS_REGISTRIES_CONF=/dev/null")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo %v: %v\n%s", args, err, out)
	}
}
