package verity

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The kernel this was written on (6.18, CONFIG_FS_VERITY unset) answers
// both ioctls with EOPNOTSUPP on ext4 and ENOTTY on tmpfs, so on such a
// host only the "unsupported" paths run. On a verity-capable filesystem
// the same test enables verity and checks the kernel against userspace.
func TestKernelVerity(t *testing.T) {
	dirs := []string{t.TempDir()}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "verity-test")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			dirs = append(dirs, d)
		}
	}
	data := pseudoRandom(3*4096+17, 9)
	want := refDigest(data)
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			p := filepath.Join(dir, "obj")
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()

			_, err = Measure(f)
			if !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrNotEnabled) {
				t.Fatalf("Measure before Enable: %v, want ErrUnsupported or ErrNotEnabled", err)
			}
			t.Logf("Measure before Enable: %v", err)

			d, fromKernel, err := MeasureOrCompute(f)
			if err != nil || fromKernel || d != want {
				t.Fatalf("MeasureOrCompute = %s, %v, %v; want %s from userspace", d, fromKernel, err, want)
			}
			if err := Verify(f, want); !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrNotEnabled) {
				t.Fatalf("Verify without verity: %v, want ErrUnsupported or ErrNotEnabled", err)
			}

			err = Enable(f)
			if errors.Is(err, ErrUnsupported) {
				t.Logf("Enable: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Enable: %v", err)
			}
			// This filesystem can do verity: the kernel must agree with us.
			if err := Enable(f); err != nil {
				t.Errorf("second Enable: %v, want nil (already enabled)", err)
			}
			got, err := Measure(f)
			if err != nil || got != want {
				t.Fatalf("Measure = %s, %v; want %s", got, err, want)
			}
			d, fromKernel, err = MeasureOrCompute(f)
			if err != nil || !fromKernel || d != want {
				t.Fatalf("MeasureOrCompute = %s, %v, %v; want %s from kernel", d, fromKernel, err, want)
			}
			if err := Verify(f, want); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			var me *MismatchError
			if err := Verify(f, DigestBytes(nil)); !errors.As(err, &me) || me.Got != want || me.Path != p {
				t.Fatalf("Verify(wrong digest) = %v, want MismatchError", err)
			}
		})
	}
}

func TestIoctlErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		errno       unix.Errno
		unsupported bool
	}{
		{unix.EOPNOTSUPP, true},
		{unix.ENOTTY, true},
		{unix.EINVAL, true},
		{unix.ENOPKG, true},
		{unix.ETXTBSY, false},
		{unix.EACCES, false},
		{unix.EROFS, false},
	} {
		err := enableError("/f", tc.errno)
		if err == nil || errors.Is(err, ErrUnsupported) != tc.unsupported || !errors.Is(err, tc.errno) {
			t.Errorf("enableError(%v) = %v; want unsupported=%v and wrapping the errno", tc.errno, err, tc.unsupported)
		}
	}
	if err := enableError("/f", unix.EEXIST); err != nil {
		t.Errorf("enableError(EEXIST) = %v, want nil: already enabled is success", err)
	}
	if err := enableError("/f", 0); err != nil {
		t.Errorf("enableError(0) = %v", err)
	}

	if err := measureError("/f", unix.ENODATA); !errors.Is(err, ErrNotEnabled) || errors.Is(err, ErrUnsupported) {
		t.Errorf("measureError(ENODATA) = %v, want ErrNotEnabled", err)
	}
	for _, e := range []unix.Errno{unix.EOPNOTSUPP, unix.ENOTTY} {
		if err := measureError("/f", e); !errors.Is(err, ErrUnsupported) || !errors.Is(err, e) {
			t.Errorf("measureError(%v) = %v, want ErrUnsupported", e, err)
		}
	}
	if err := measureError("/f", unix.EOVERFLOW); err == nil || errors.Is(err, ErrUnsupported) || errors.Is(err, ErrNotEnabled) {
		t.Errorf("measureError(EOVERFLOW) = %v, want a plain error", err)
	}
}

func TestIoctlClosedFile(t *testing.T) {
	f, err := os.Open(writeTemp(t, t.TempDir(), []byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Measure(f); err == nil {
		t.Error("Measure on closed file succeeded")
	}
	if err := Enable(f); err == nil {
		t.Error("Enable on closed file succeeded")
	}
	if _, _, err := MeasureOrCompute(f); err == nil {
		t.Error("MeasureOrCompute on closed file succeeded")
	}
}
