package vm_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/pull"
	"github.com/cfs-deploy/cfs-deploy/internal/verity"
	"github.com/cfs-deploy/cfs-deploy/tests/vm/vmtest"
)

// pullChanges is the update the publisher makes to the test OS: a changed
// file and a new one that are objects (more than 64 bytes), and a small
// one inline in the image.
var pullChanges = map[string][]byte{
	"/usr/share/test/65.txt":     bytes.Repeat([]byte("changed by the update that came with a pull\n"), 3),
	"/usr/share/test/pulled.bin": pseudoRandom(96 << 10), // a prefix of big.bin: another digest
	"/usr/share/test/version":    []byte("2\n"),
}

// The publisher's repository as the booted host reads it: on the second
// disk, which the test init mounts read-only on /mnt.
const pubRepo = "/pub/repo"

// testPull is an offline update: a build machine (the host here) commits
// version 2 of the test OS into a repository of its own, which goes to the
// installed machine on a second disk. The booted v1 pulls the branch from
// it with a file:// URL, which fetches only the objects it lacks, each
// checked against its digest and stored with fs-verity; rolls it out; and
// boots v2.
func (f *fixture) testPull(t *testing.T) {
	in := f.installed(t, "verity")
	start := time.Now()
	disk := f.diskCopy(t, in)
	dir := t.TempDir()

	// The publisher: an insecure repository is enough, since the puller
	// checks every object by its digest whatever the source.
	tree := filepath.Join(dir, "v2")
	f.copyTree(t, tree)
	for p, data := range pullChanges {
		must(t, os.WriteFile(filepath.Join(tree, p), data, 0o644))
	}
	media := filepath.Join(dir, "media")
	pub := filepath.Join(media, pubRepo)
	f.hostDeploy(t, pub, "init", "--insecure")
	out := f.hostDeploy(t, pub, "commit", "--branch", branch, "--version", "2", "--subject", "version 2, published", tree)
	v2 := matchOne(t, out, `(?m)^commit ([0-9a-f]{64})$`)
	v2Image := matchOne(t, out, `(?m)^image\s+([0-9a-f]{64})$`)

	// What v1's repository lacks: the new contents that are objects.
	have := map[verity.Digest]bool{}
	for _, tf := range f.files {
		have[verity.DigestBytes(tf.data)] = true
	}
	lacking := map[verity.Digest]string{}
	var lackingBytes int64
	for p, data := range pullChanges {
		if d := verity.DigestBytes(data); len(data) > 64 && !have[d] && lacking[d] == "" {
			lacking[d] = p
			lackingBytes += int64(len(data))
		}
	}

	url := "file:///mnt" + pubRepo
	must(t, os.WriteFile(filepath.Join(media, "pull1.sh"), []byte("set -e\n"+
		"echo \"version: $(cat /usr/share/test/version 2>/dev/null || echo none)\"\n"+
		taggedScript("pull", "cfs-deploy pull --json "+url+" "+branch)+
		"cfs-deploy rollout "+branch+"\n"+
		statusScript("status")), 0o644))
	must(t, os.WriteFile(filepath.Join(media, "pull2.sh"), []byte("set -e\n"+
		"echo \"version: $(cat /usr/share/test/version)\"\n"+
		"sha256sum /usr/share/test/65.txt /usr/share/test/pulled.bin\n"+
		"cfs-deploy fsck\n"+
		statusScript("status")), 0o644))
	steps := vmtest.MakeExt4FromDir(t, ext4SizeFor(t, media), media, false)

	// Boot 1: v1 pulls v2 and rolls it out.
	out = f.runStep(t, disk, steps, "pull1.sh")
	checkImageBooted(t, out, in.image)
	if !strings.Contains(runLines(out), "version: none") {
		t.Errorf("v1 already has /usr/share/test/version:\n%s", runLines(out))
	}
	var res pull.Result
	if js := taggedOutput(t, out, "pull"); json.Unmarshal([]byte(js), &res) != nil {
		t.Fatalf("pull --json printed:\n%s", js)
	}
	if res.Commit != v2 || res.Image != v2Image || res.UpToDate || res.Commits != 1 {
		t.Errorf("pull: commit %s image %s up to date %v, %d commits; want the published %s, image %s, 1 commit",
			res.Commit, res.Image, res.UpToDate, res.Commits, v2, v2Image)
	}
	if res.Fetched != len(lacking) || res.ObjectBytes != lackingBytes || res.Present != res.Objects-res.Fetched || res.Objects <= res.Fetched {
		t.Errorf("pull fetched %d objects (%d bytes) of %d, %d present; want the %d (%d bytes) v1 lacks, fewer than all",
			res.Fetched, res.ObjectBytes, res.Objects, res.Present, len(lacking), lackingBytes)
	}
	imageSize := fileSize(t, filepath.Join(pub, strings.TrimPrefix(objectPath(v2Image), "/composefs")))
	if res.Bytes < res.ObjectBytes+imageSize {
		t.Errorf("pull received %d bytes, less than the objects (%d) and the image (%d)", res.Bytes, res.ObjectBytes, imageSize)
	}
	total := dirBytes(t, filepath.Join(pub, "objects"))
	t.Logf("pull in the VM: %.2f s; %d of %d objects fetched (%d bytes), %d bytes received in %d requests (published repository: %d bytes of objects; image %d bytes)",
		res.Seconds, res.Fetched, res.Objects, res.ObjectBytes, res.Bytes, res.Requests, total, imageSize)
	st := statusOf(t, out, "status")
	if len(st) != 2 || st[0].Image != v2Image || !st[0].Default || st[0].Booted || st[1].Image != in.image || !st[1].Booted {
		t.Fatalf("status after rolling out the pulled commit: %+v", st)
	}

	// Boot 2: v2, from the pulled objects, under fs-verity.
	out = f.runStep(t, disk, steps, "pull2.sh")
	checkImageBooted(t, out, v2Image)
	if r := bootRecordOf(t, out); r.Digest != v2Image || r.Insecure || !r.KernelVerity {
		t.Errorf("booted.json: digest %s insecure %v kernel_verity %v; want %s, false, true", r.Digest, r.Insecure, r.KernelVerity, v2Image)
	}
	lines := runLines(out)
	if !strings.Contains(lines, "version: 2\n") {
		t.Errorf("v2's /usr/share/test/version does not read 2:\n%s", lines)
	}
	for _, p := range []string{"/usr/share/test/65.txt", "/usr/share/test/pulled.bin"} {
		if want := fmt.Sprintf("%x  %s\n", sha256.Sum256(pullChanges[p]), p); !strings.Contains(lines, want) {
			t.Errorf("%s on v2 does not have the published content (want the line %q):\n%s", p, want, lines)
		}
	}
	st = statusOf(t, out, "status")
	if len(st) != 2 || st[0].Image != v2Image || !st[0].Booted || !st[0].Default || st[1].Image != in.image || !st[1].Rollback {
		t.Errorf("status on the pulled v2: %+v", st)
	}

	// Offline: what the pull stored carries fs-verity, like the objects
	// commit wrote.
	for d, p := range lacking {
		if !hasVerity(t, disk, objectPath(d.String())) {
			t.Errorf("pulled object %s (%s) has no fs-verity", d, p)
		}
	}
	if !hasVerity(t, disk, objectPath(v2Image)) {
		t.Errorf("the pulled image %s has no fs-verity", v2Image)
	}
	t.Logf("pull scenario: %v (pull, rollout and two boots)", time.Since(start).Round(time.Millisecond))
}

// hostDeploy runs cfs-deploy on the host on the repository repoDir and
// returns its output.
func (f *fixture) hostDeploy(t *testing.T, repoDir string, args ...string) string {
	t.Helper()
	out, err := exec.Command(f.deployBin, append([]string{"--repo", repoDir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("cfs-deploy --repo %s %s: %v\n%s", repoDir, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// matchOne returns the first submatch of re in s.
func matchOne(t *testing.T, s, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no %s in:\n%s", re, s)
	}
	return m[1]
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// dirBytes is the total size of the regular files under dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// ext4SizeFor is an ext4 size (mkfs.ext4 syntax) that holds the files
// under dir with room for the file system's own metadata.
func ext4SizeFor(t *testing.T, dir string) string {
	t.Helper()
	return fmt.Sprintf("%dM", dirBytes(t, dir)*5/4>>20+32)
}
