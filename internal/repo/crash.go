package repo

import (
	"os"

	"golang.org/x/sys/unix"
)

// crashEnv names the environment variable of the crash-safety tests
// (tests/repo). It is test-only: when it names one of the points below,
// a commit that reaches that point kills its own process with SIGKILL,
// which is how the tests stop a commit at an exact step and then check
// that the repository is still consistent. Unset (always, outside the
// tests) it does nothing.
//
//	after-objects  every file of the tree is stored; nothing else is
//	mid-image      the image object is stored but not indexed
//	after-record   the commit record is stored, nothing is synced or indexed
//	before-branch  synced and indexed; the branch still names the old tip
//	after-branch   the branch names the new commit
const crashEnv = "CFS_DEPLOY_TEST_CRASH"

var crashAt = os.Getenv(crashEnv)

// crashPoint kills the process if crashEnv names point.
func crashPoint(point string) {
	if crashAt == "" || crashAt != point {
		return
	}
	unix.Kill(os.Getpid(), unix.SIGKILL)
	select {} // SIGKILL cannot be caught; wait for it to land
}
