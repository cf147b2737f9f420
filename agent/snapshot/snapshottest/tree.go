package snapshottest

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Node is what a user can see of one entry in a tree: its type and
// permission bits, owner, and the content of a regular file or the target
// of a symlink. Times are left out: copying a tree rightly changes them.
type Node struct {
	Mode    fs.FileMode
	UID     uint32
	GID     uint32
	Content string
	Target  string
}

func (n Node) String() string {
	s := fmt.Sprintf("%v %d:%d", n.Mode, n.UID, n.GID)
	switch {
	case n.Mode.IsRegular():
		s += fmt.Sprintf(" %q", n.Content)
	case n.Mode&fs.ModeSymlink != 0:
		s += " -> " + n.Target
	}
	return s
}

// ReadTree reads every entry under dir (dir itself as ".") into a map
// keyed by slash-separated relative path.
func ReadTree(t testing.TB, dir string) map[string]Node {
	t.Helper()
	tree := map[string]Node{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n := Node{Mode: fi.Mode()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n.UID, n.GID = st.Uid, st.Gid
		}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.Content = string(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			if n.Target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		tree[filepath.ToSlash(rel)] = n
		return nil
	})
	if err != nil {
		t.Fatalf("read tree %s: %v", dir, err)
	}
	return tree
}

// TreeDiff describes how tree got differs from tree want, one line per
// path, or returns "" when they are the same.
func TreeDiff(got, want map[string]Node) string {
	var paths []string
	for p := range got {
		paths = append(paths, p)
	}
	for p := range want {
		if _, ok := got[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	var b strings.Builder
	for _, p := range paths {
		g, gok := got[p]
		w, wok := want[p]
		switch {
		case !gok:
			fmt.Fprintf(&b, "  %s: missing, want %v\n", p, w)
		case !wok:
			fmt.Fprintf(&b, "  %s: unexpected %v\n", p, g)
		case g != w:
			fmt.Fprintf(&b, "  %s: got %v, want %v\n", p, g, w)
		}
	}
	return b.String()
}
