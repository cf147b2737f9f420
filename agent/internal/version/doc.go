// Package version owns the reading and ordering of release numbers such as
// CRIU's "4.2.1", runc's "1.3.6+ds1" or a kernel release "6.18.44-fc-v782",
// so that the doctor's minimum-version checks and a checkpoint's
// compatibility checks agree on what a version is and which one is older.
package version
