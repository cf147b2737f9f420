// Package snapshotters opens a snapshot.Snapshotter by name. It is apart
// from package snapshot because it imports the implementations, which
// import snapshot.
package snapshotters
