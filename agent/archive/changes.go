package archive

import (
	"context"
	"fmt"
	"io"
	"path"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// Incremental diffs, for syncing a container's writable layer while it
// runs: the whole layer once (recording what was sent), then, with the
// container frozen, only what changed since.

// RacyWindow is how close to the start of a recording a change may come
// and still be missed by a stat comparison: a file written in the same
// clock tick as its last recorded stat keeps its ctime, mtime and size.
// Entries whose ctime is that close to, or after, the recording's start
// are compared by content (or sent again) instead; a second covers the
// coarsest filesystem clock with room to spare.
const RacyWindow = time.Second

// UpperIndex is what WriteOverlayMark recorded of an overlayfs upper dir:
// every entry's identity and stat as it was when its data was read, so
// that WriteOverlayChanges can tell what changed since.
type UpperIndex struct {
	// Taken is when the recording began.
	Taken time.Time `json:"taken"`
	// Entries maps each entry's slash-separated path to its state.
	Entries map[string]UpperEntry `json:"entries"`
}

// UpperEntry is one recorded entry. Names of one inode share one record,
// taken when the first of them was read, so that they all compare alike.
type UpperEntry struct {
	Mode  uint32 `json:"mode"` // st_mode: type and permissions
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size,omitempty"`
	Mtime int64  `json:"mtime"` // nanoseconds
	Ctime int64  `json:"ctime"`
	// Opaque marks a directory that hid its lower dirs.
	Opaque bool `json:"opaque,omitempty"`
}

func upperEntry(e *entry) UpperEntry {
	return UpperEntry{
		Mode: e.st.Mode, Ino: e.st.Ino, Size: e.st.Size,
		Mtime: e.st.Mtim.Nano(), Ctime: e.st.Ctim.Nano(),
		Opaque: e.typ() == unix.S_IFDIR && e.xattrs[overlayOpaqueXattr] == overlayOpaqueValue,
	}
}

func (u UpperEntry) typ() uint32 { return u.Mode & unix.S_IFMT }

// WriteOverlayMark writes an overlayfs upper dir as WriteOverlayDiff does
// and returns what it recorded of every entry, for WriteOverlayChanges.
// The upper dir may change while it is read (the container runs): each
// entry is recorded before its data is read, so a change during the read
// shows as a change later. A file that shrinks while it is read fails the
// mark; mark again.
func WriteOverlayMark(ctx context.Context, upperDir string, w io.Writer) (*UpperIndex, error) {
	idx := &UpperIndex{Taken: time.Now(), Entries: map[string]UpperEntry{}}
	d := newDiffWriter(w)
	r := &recorder{idx: idx, inodes: map[fileID]UpperEntry{}}
	if err := d.overlayTree(ctx, upperDir, "", r); err != nil {
		return nil, fmt.Errorf("overlay mark of %s: %w", upperDir, err)
	}
	if err := d.tw.Close(); err != nil {
		return nil, fmt.Errorf("overlay mark of %s: %w", upperDir, err)
	}
	return idx, nil
}

// WriteOverlayChanges writes what changed in an overlayfs upper dir since
// WriteOverlayMark recorded since, as an OCI layer tar to apply on top of
// what the mark wrote: new and changed entries in full, a whiteout for
// each entry gone, and a directory replaced since (another inode, or one
// that became opaque) as a whiteout followed by the whole new directory,
// marked opaque when it is. A stat that matches the record is trusted
// only when its ctime is older than the recording by RacyWindow. The
// upper dir must not change while it is read: freeze the container.
func WriteOverlayChanges(ctx context.Context, upperDir string, since *UpperIndex, w io.Writer) error {
	c := &changes{since: since, racyFrom: since.Taken.Add(-RacyWindow).UnixNano(), children: map[string][]string{}}
	for p := range since.Entries {
		dir := path.Dir(p)
		if dir == "." {
			dir = ""
		}
		c.children[dir] = append(c.children[dir], path.Base(p))
	}
	d := newDiffWriter(w)
	if err := d.overlayChanges(ctx, upperDir, "", c); err != nil {
		return fmt.Errorf("overlay changes of %s: %w", upperDir, err)
	}
	if err := d.tw.Close(); err != nil {
		return fmt.Errorf("overlay changes of %s: %w", upperDir, err)
	}
	return nil
}

// recorder fills an UpperIndex as entries are written.
type recorder struct {
	idx *UpperIndex
	// inodes holds the record of each multiply-linked inode seen.
	inodes map[fileID]UpperEntry
}

func (r *recorder) record(e *entry, rel string) {
	if r == nil {
		return
	}
	u := upperEntry(e)
	if e.typ() != unix.S_IFDIR && e.st.Nlink > 1 {
		id := fileID{dev: e.st.Dev, ino: e.st.Ino}
		if first, ok := r.inodes[id]; ok {
			u = first
		} else {
			r.inodes[id] = u
		}
	}
	r.idx.Entries[rel] = u
}

// overlayTree writes the upper dir subtree full (at rel) as overlayDir
// does, recording each entry with r (nil: none).
func (d *diffWriter) overlayTree(ctx context.Context, full, rel string, r *recorder) error {
	entries, err := readEntries(full)
	if err != nil {
		return err
	}
	// Whiteouts first, as the OCI spec asks of layer writers.
	for i := range entries {
		if e := &entries[i]; e.isOverlayWhiteout() {
			r.record(e, joinRel(rel, e.name))
			if err := d.writeWhiteout(joinRel(rel, whiteoutPrefix+e.name), &e.st); err != nil {
				return err
			}
		}
	}
	for i := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := &entries[i]
		if e.isOverlayWhiteout() {
			continue
		}
		childRel := joinRel(rel, e.name)
		if err := checkSelfContained(e, childRel); err != nil {
			return err
		}
		r.record(e, childRel)
		if err := d.writeEntry(e, childRel); err != nil {
			return err
		}
		if e.typ() != unix.S_IFDIR {
			continue
		}
		if e.xattrs[overlayOpaqueXattr] == overlayOpaqueValue {
			if err := d.writeWhiteout(joinRel(childRel, opaqueWhiteout), &e.st); err != nil {
				return err
			}
		}
		if err := d.overlayTree(ctx, e.full, childRel, r); err != nil {
			return err
		}
	}
	return nil
}

// checkSelfContained refuses upper entries whose content or identity
// lives in a lower layer.
func checkSelfContained(e *entry, rel string) error {
	if _, ok := e.xattrs[overlayRedirectXattr]; ok {
		return fmt.Errorf("%s: %w: overlay redirect_dir is in use; mount the overlay without it", rel, ErrUnsupported)
	}
	if _, ok := e.xattrs[overlayMetacopyXattr]; ok {
		return fmt.Errorf("%s: %w: overlay metacopy is in use; mount the overlay without it", rel, ErrUnsupported)
	}
	return nil
}

// changes is the comparison state of WriteOverlayChanges.
type changes struct {
	since *UpperIndex
	// racyFrom (ns): a recorded ctime from here on is not trusted.
	racyFrom int64
	// children lists the recorded names in each recorded directory.
	children map[string][]string
}

// changed reports whether e differs from its record u.
func (c *changes) changed(u UpperEntry, e *entry) bool {
	return u.Mode != e.st.Mode || u.Ino != e.st.Ino || u.Size != e.st.Size ||
		u.Mtime != e.st.Mtim.Nano() || u.Ctime != e.st.Ctim.Nano() || u.Ctime >= c.racyFrom
}

func (d *diffWriter) overlayChanges(ctx context.Context, full, rel string, c *changes) error {
	entries, err := readEntries(full)
	if err != nil {
		return err
	}
	present := make(map[string]bool, len(entries))
	for _, e := range entries {
		present[e.name] = true
	}
	// What is gone: its whiteout takes it away on the other side.
	gone := []string{}
	for _, name := range c.children[rel] {
		if !present[name] {
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	for _, name := range gone {
		if err := d.writeWhiteout(joinRel(rel, whiteoutPrefix+name), &unix.Stat_t{}); err != nil {
			return err
		}
	}
	for i := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := &entries[i]
		childRel := joinRel(rel, e.name)
		u, recorded := c.since.Entries[childRel]
		switch {
		case e.isOverlayWhiteout():
			// Whiteouts may share one inode (overlayfs links them to
			// one), whose ctime moves with every link: only the type
			// counts.
			if recorded && u.typ() == unix.S_IFCHR {
				continue
			}
			if err := d.writeWhiteout(joinRel(rel, whiteoutPrefix+e.name), &e.st); err != nil {
				return err
			}
		case e.typ() == unix.S_IFDIR:
			if err := checkSelfContained(e, childRel); err != nil {
				return err
			}
			now := upperEntry(e)
			if recorded && u.typ() == unix.S_IFDIR && u.Ino == now.Ino && u.Opaque == now.Opaque {
				// The same directory: its own metadata if it changed,
				// then what changed inside.
				if c.changed(u, e) {
					if err := d.writeEntry(e, childRel); err != nil {
						return err
					}
				}
				if err := d.overlayChanges(ctx, e.full, childRel, c); err != nil {
					return err
				}
				continue
			}
			// New, or replaced: whatever was there goes, the whole new
			// directory comes.
			if recorded {
				if err := d.writeWhiteout(joinRel(rel, whiteoutPrefix+e.name), &e.st); err != nil {
					return err
				}
			}
			if err := d.writeEntry(e, childRel); err != nil {
				return err
			}
			if now.Opaque {
				if err := d.writeWhiteout(joinRel(childRel, opaqueWhiteout), &e.st); err != nil {
					return err
				}
			}
			if err := d.overlayTree(ctx, e.full, childRel, nil); err != nil {
				return err
			}
		default:
			if err := checkSelfContained(e, childRel); err != nil {
				return err
			}
			if recorded && !c.changed(u, e) {
				continue
			}
			if err := d.writeEntry(e, childRel); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriteTreeChanges writes what differs in the full tree dir from before,
// an earlier read-only snapshot of it taken at marked (a btrfs
// subvolume), as WriteTreeDiff does; a regular file whose stat matches is
// compared by content when its ctime is within RacyWindow of marked or
// later, since it may have been written in the tick the snapshot was
// taken. dir must not change while it is read.
func WriteTreeChanges(ctx context.Context, before, dir string, marked time.Time, w io.Writer) error {
	d := newDiffWriter(w)
	if err := d.treeDir(ctx, before, dir, "", marked.Add(-RacyWindow).UnixNano()); err != nil {
		return fmt.Errorf("changes of %s since %s: %w", dir, before, err)
	}
	if err := d.tw.Close(); err != nil {
		return fmt.Errorf("changes of %s since %s: %w", dir, before, err)
	}
	return nil
}
