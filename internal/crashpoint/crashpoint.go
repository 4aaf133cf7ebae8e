// Package crashpoint lets the crash-safety tests stop a process at an exact
// step: code calls Here("name") at the points where a crash must leave
// consistent state, and a test binary built with the build tag
// "crashpoints" kills itself with SIGKILL at the point that the
// environment variable CFS_DEPLOY_TEST_CRASH names.
//
// Shipped binaries are built without the tag; there Here does nothing and
// no environment variable can make the program kill itself.
package crashpoint

// Env names the environment variable that selects the crash point in a
// binary built with the "crashpoints" tag.
const Env = "CFS_DEPLOY_TEST_CRASH"

// Tag is the build tag that compiles the crash points in.
const Tag = "crashpoints"
