package initboot

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/mount"
	"github.com/cfs-deploy/cfs-deploy/internal/sysroot"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

// fakeRepo makes a sysroot with a repository holding images for the given
// digests (as links to objects with arbitrary content, like the real
// layout) and returns the sysroot.
func fakeRepo(t *testing.T, digests ...string) string {
	t.Helper()
	sysroot := t.TempDir()
	for _, d := range []string{imagesDir, objectsDir} {
		if err := os.MkdirAll(filepath.Join(sysroot, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(sysroot, repoDir, "meta.json"), []byte(`{"version":1,"algorithm":"fsverity-sha256-12"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range digests {
		obj := filepath.Join(sysroot, objectsDir, d[:2], d[2:])
		if err := os.MkdirAll(filepath.Dir(obj), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(obj, []byte("image "+d), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "objects", d[:2], d[2:]), filepath.Join(sysroot, imagesDir, d)); err != nil {
			t.Fatal(err)
		}
	}
	return sysroot
}

func quietLog() *Log { return NewLog(&bytes.Buffer{}, nil, true) }

func TestChooseImageInOrder(t *testing.T) {
	sysroot := fakeRepo(t, digestB, digestC)
	if err := openRepo(sysroot); err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan("composefs=" + digestA + " composefs=?" + digestB + " composefs=" + digestC)
	if err != nil {
		t.Fatal(err)
	}
	img, err := chooseImage(sysroot, p.Images, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref.Digest.String() != digestB || !img.Ref.Insecure || img.Rel != "composefs/images/"+digestB {
		t.Errorf("chose %+v, want the first present one, %s (insecure)", img, digestB)
	}

	p, _ = NewPlan("composefs=" + digestA)
	_, err = chooseImage(sysroot, p.Images, quietLog())
	if err == nil || !strings.Contains(err.Error(), "none of the images") || !strings.Contains(err.Error(), "composefs="+digestA) {
		t.Errorf("no image present: %v", err)
	}

	// A link whose object is gone is not "not found": booting the next
	// image would silently boot an older system.
	if err := os.Remove(filepath.Join(sysroot, objectsDir, digestB[:2], digestB[2:])); err != nil {
		t.Fatal(err)
	}
	p, _ = NewPlan("composefs=" + digestB + " composefs=" + digestC)
	_, err = chooseImage(sysroot, p.Images, quietLog())
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("dangling image link: %v", err)
	}
}

func TestOpenRepoErrors(t *testing.T) {
	empty := t.TempDir()
	if err := openRepo(empty); err == nil || !strings.Contains(err.Error(), "has no composefs repository") {
		t.Errorf("no repository: %v", err)
	}
	os.WriteFile(filepath.Join(empty, repoDir), nil, 0o644)
	if err := openRepo(empty); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("repository is a file: %v", err)
	}
}

// TestVerifyImageWithoutVerity runs where the temporary directory has no
// fs-verity (or the file does not have it enabled): a verified boot must
// refuse, an insecure one goes on to the userspace digest.
func TestVerifyImageWithoutVerity(t *testing.T) {
	sysroot := fakeRepo(t, digestA)
	p, _ := NewPlan("composefs=" + digestA)
	img, err := chooseImage(sysroot, p.Images, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	err = verifyImage(img)
	if err == nil {
		t.Skip("the temporary directory's file has fs-verity")
	}
	want := "image composefs/images/" + digestA + " has no fs-verity digest the kernel can vouch for"
	if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "composefs=?"+digestA) {
		t.Errorf("secure image without verity:\n%v\nwant it to start %q and suggest composefs=?", err, want)
	}
	img.Ref.Insecure = true
	if err := verifyImage(img); err != nil || img.KernelVerity {
		t.Errorf("insecure image without verity: %v, kernel verity %v", err, img.KernelVerity)
	}
}

func TestFailureTexts(t *testing.T) {
	want, _ := verity.ParseDigest(digestA)
	got, _ := verity.ParseDigest(digestB)
	rel := "composefs/images/" + digestA
	tests := []struct {
		name string
		err  error
		mods error
		want string
	}{
		{"kernel digest mismatch", &bootError{msg: mismatchText(rel, got, want, true)}, nil,
			"refusing to boot: image composefs/images/" + digestA + " has fs-verity digest " + digestB +
				", the kernel command line expects " + digestA + "; the image was changed or the boot entry is wrong."},
		{"userspace digest mismatch from mount", mountMismatch(t, rel, got, want), nil,
			"refusing to boot: image composefs/images/" + digestA + " has fs-verity digest " + digestB +
				" (computed by cfs-init: insecure deployment without fs-verity), the kernel command line expects " + digestA +
				"; the image was changed or the boot entry is wrong."},
		{"step", during("mount the root file system", errors.New("mount /dev/vda: input/output error")), nil,
			"refusing to boot: cannot mount the root file system: mount /dev/vda: input/output error."},
		{"explained errors keep their words", during("verify", &bootError{msg: "image x is bad."}), nil,
			"refusing to boot: image x is bad."},
		{"modules", errors.New("root device /dev/vda did not appear within 10s; no block devices at all"),
			errors.Join(errors.New("module virtio_blk (kernel/drivers/block/virtio_blk.ko.xz): finit_module: exec format error"),
				errors.New("module ext4: open: no such file")),
			"refusing to boot: root device /dev/vda did not appear within 10s; no block devices at all. " +
				"Kernel modules that failed to load earlier: module virtio_blk (kernel/drivers/block/virtio_blk.ko.xz): finit_module: exec format error; module ext4: open: no such file."},
	}
	for _, tt := range tests {
		if got := FailureText(tt.err, tt.mods); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
	}
}

// mountMismatch returns what mountImage makes of mount.Mount's mismatch
// error for an insecure image.
func mountMismatch(t *testing.T, rel string, got, want verity.Digest) error {
	inner := &mount.DigestMismatchError{Image: rel, Want: want, Got: got, FromKernel: false}
	var mm *mount.DigestMismatchError
	if !errors.As(inner, &mm) {
		t.Fatal("not a DigestMismatchError")
	}
	return &bootError{msg: mismatchText(rel, mm.Got, mm.Want, mm.FromKernel), err: inner}
}

func TestFindDeployment(t *testing.T) {
	d, _ := verity.ParseDigest(digestA)
	root := t.TempDir()
	_, err := findDeployment(root, d, quietLog())
	want := "the deployment's state directory (its /etc and origin.json, which rollout creates) is missing: state/deploy/" + digestA + " does not exist on the root file system"
	if err == nil || err.Error() != want {
		t.Errorf("missing state dir:\n got %v\nwant %s", err, want)
	}

	dir := filepath.Join(root, "state/deploy", digestA)
	os.MkdirAll(dir, 0o755)
	if _, err := findDeployment(root, d, quietLog()); err == nil || !strings.Contains(err.Error(), "state/deploy/"+digestA+"/etc") {
		t.Errorf("missing etc: %v", err)
	}
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)

	// No origin.json: the default stateroot, whose /var is created.
	dep, err := findDeployment(root, d, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if dep.StateRoot != "default" || dep.Var != "state/os/default/var" || isDir(filepath.Join(root, dep.Var)) {
		t.Errorf("default stateroot: %+v (looking it up must not create /var)", dep)
	}
	if err := prepareVar(root, dep, quietLog()); err != nil || !isDir(filepath.Join(root, dep.Var)) {
		t.Errorf("creating /var: %v", err)
	}
	os.WriteFile(filepath.Join(root, "state/os/file"), nil, 0o644)
	if err := prepareVar(root, &deployment{Var: "state/os/file/var", StateRoot: "file"}, quietLog()); err == nil ||
		!strings.Contains(err.Error(), `the /var of OS "file"`) {
		t.Errorf("creating /var under a file: %v", err)
	}

	os.WriteFile(filepath.Join(dir, sysroot.OriginFile), []byte(`{"stateroot": "fedora", "image": "x"}`), 0o644)
	if dep, err = findDeployment(root, d, quietLog()); err != nil || dep.Var != "state/os/fedora/var" {
		t.Errorf("named stateroot: %+v, %v", dep, err)
	}
	os.WriteFile(filepath.Join(dir, sysroot.OriginFile), []byte(`{"image": "x"}`), 0o644)
	if dep, err = findDeployment(root, d, quietLog()); err != nil || dep.StateRoot != "default" {
		t.Errorf("origin without stateroot: %+v, %v", dep, err)
	}
	for _, bad := range []string{`{"stateroot": "../x"}`, `{"stateroot": ".."}`, `{"stateroot": 3}`, `not json`, `{"stateroot": "a"} x`} {
		os.WriteFile(filepath.Join(dir, sysroot.OriginFile), []byte(bad), 0o644)
		if _, err := findDeployment(root, d, quietLog()); err == nil || !strings.Contains(err.Error(), sysroot.OriginFile) {
			t.Errorf("origin.json %s: %v", bad, err)
		}
	}
	os.Remove(filepath.Join(dir, sysroot.OriginFile))

	// The stateroot file rollout writes wins over origin.json.
	os.WriteFile(filepath.Join(dir, sysroot.StaterootFile), []byte("debian\n"), 0o644)
	if dep, err = findDeployment(root, d, quietLog()); err != nil || dep.Var != "state/os/debian/var" {
		t.Errorf("stateroot file: %+v, %v", dep, err)
	}
	os.WriteFile(filepath.Join(dir, sysroot.StaterootFile), []byte("../etc\n"), 0o644)
	if _, err := findDeployment(root, d, quietLog()); err == nil || !strings.Contains(err.Error(), "stateroot") {
		t.Errorf("bad stateroot file: %v", err)
	}
}

// TestHostileState: the root partition is untrusted. A FIFO or a link to
// /dev/zero as a state file, or a symbolic link as a state directory,
// must give a refusal (message and reboot), never a hang, an
// out-of-memory crash or a mount of something else.
func TestHostileState(t *testing.T) {
	d, err := verity.ParseDigest(digestA)
	if err != nil {
		t.Fatal(err)
	}
	setup := func(t *testing.T) (root, dir string) {
		root = t.TempDir()
		dir = filepath.Join(root, "state/deploy", digestA)
		if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		return root, dir
	}
	for _, name := range []string{sysroot.OriginFile, sysroot.StaterootFile} {
		t.Run("fifo-"+name, func(t *testing.T) {
			root, dir := setup(t)
			if err := syscall.Mkfifo(filepath.Join(dir, name), 0o644); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := findDeployment(root, d, quietLog()); done <- err }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "not a regular file") {
					t.Errorf("FIFO %s: %v", name, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("findDeployment hangs on a FIFO %s", name)
			}
		})
		t.Run("devzero-"+name, func(t *testing.T) {
			root, dir := setup(t)
			if err := os.Symlink("/dev/zero", filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
			if _, err := findDeployment(root, d, quietLog()); err == nil || !strings.Contains(err.Error(), "symbolic link") {
				t.Errorf("%s -> /dev/zero: %v", name, err)
			}
		})
	}
	t.Run("big-origin", func(t *testing.T) {
		root, dir := setup(t)
		f, _ := os.Create(filepath.Join(dir, sysroot.OriginFile))
		f.Truncate(sysroot.MaxStateFile + 1)
		f.Close()
		if _, err := findDeployment(root, d, quietLog()); err == nil || !strings.Contains(err.Error(), "more than") {
			t.Errorf("huge origin.json: %v", err)
		}
	})
	t.Run("etc-symlink", func(t *testing.T) {
		root, dir := setup(t)
		os.Remove(filepath.Join(dir, "etc"))
		if err := os.Symlink("/etc", filepath.Join(dir, "etc")); err != nil {
			t.Fatal(err)
		}
		if _, err := findDeployment(root, d, quietLog()); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("etc -> /etc: %v", err)
		}
	})
	t.Run("deploy-symlink", func(t *testing.T) {
		root := t.TempDir()
		other := t.TempDir()
		os.MkdirAll(filepath.Join(other, digestA, "etc"), 0o755)
		os.MkdirAll(filepath.Join(root, "state"), 0o755)
		os.Symlink(other, filepath.Join(root, "state/deploy"))
		if _, err := findDeployment(root, d, quietLog()); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("state/deploy -> elsewhere: %v", err)
		}
	})
	t.Run("var-symlink", func(t *testing.T) {
		root, _ := setup(t)
		os.MkdirAll(filepath.Join(root, "state/os/default"), 0o755)
		os.Symlink("/etc", filepath.Join(root, "state/os/default/var"))
		dep, err := findDeployment(root, d, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		if err := prepareVar(root, dep, quietLog()); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("var -> /etc: %v", err)
		}
	})
}
