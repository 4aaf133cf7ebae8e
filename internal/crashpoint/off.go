//go:build !crashpoints

package crashpoint

// Enabled reports whether this binary was built with the crash points.
const Enabled = false

// Here does nothing: this binary was built without the crash points.
func Here(string) {}
