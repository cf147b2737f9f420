// Package overlay is the default snapshotter: each snapshot is a directory
// root/snapshots/<id> holding fs (the layer's own files: an overlayfs upper
// dir, or the whole tree for a snapshot without a parent) and work
// (overlayfs's work dir). A snapshot with parents mounts as overlayfs with
// the parents' fs dirs as lower dirs, nearest first; one without mounts as
// a bind of its fs dir.
//
// Diffs are read straight from the upper dir, so mounts keep it
// self-describing: redirect_dir and metacopy are off (a renamed or
// chmod-ed lower entry is copied up whole), and index is off so an upper
// dir can be mounted again over a re-created lower chain.
package overlay
