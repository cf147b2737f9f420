package overlay_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/agent/snapshot/overlay"
	"github.com/godwit/godwit/agent/snapshot/snapshottest"
	"github.com/godwit/godwit/internal/testutil"
)

func open(t *testing.T, root string) snapshot.Snapshotter {
	t.Helper()
	s, err := overlay.New(root, snapshottest.Logger(t))
	if err != nil {
		t.Fatalf("open overlay snapshotter: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	snapshottest.Run(t, open, func(t *testing.T) string { return t.TempDir() })
}

// TestMountOptions checks the overlay options that keep an upper dir a
// complete diff, and the choice between bind and overlay mounts.
func TestMountOptions(t *testing.T) {
	ctx := t.Context()
	s := open(t, t.TempDir())
	t.Cleanup(func() { s.Close() })
	must(t, commitEmpty(ctx, s, "l1", ""))
	must(t, commitEmpty(ctx, s, "l2", "l1"))

	cases := []struct {
		name, parent string
		view         bool
		wantType     string
		wantOpts     []string
	}{
		{"active without parent", "", false, snapshot.MountTypeBind, []string{"rw"}},
		{"view without parent", "", true, snapshot.MountTypeBind, []string{"ro"}},
		{"view of one layer", "l1", true, snapshot.MountTypeBind, []string{"ro"}},
		{"active on a layer", "l1", false, "overlay", []string{"index=off", "redirect_dir=off", "metacopy=off", "upperdir=", "workdir=", "lowerdir="}},
		{"view of two layers", "l2", true, "overlay", []string{"index=off", "redirect_dir=off", "metacopy=off", "ro", "lowerdir="}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := fmt.Sprintf("k%d", i)
			var mounts []snapshot.Mount
			var err error
			if tc.view {
				mounts, err = s.View(ctx, key, tc.parent)
			} else {
				mounts, err = s.Prepare(ctx, key, tc.parent)
			}
			must(t, err)
			if len(mounts) != 1 || mounts[0].Type != tc.wantType {
				t.Fatalf("mounts = %+v, want one %s mount", mounts, tc.wantType)
			}
			opts := strings.Join(mounts[0].Options, ",")
			for _, o := range tc.wantOpts {
				if !strings.Contains(opts, o) {
					t.Errorf("options %q lack %q", opts, o)
				}
			}
		})
	}
}

func commitEmpty(ctx context.Context, s snapshot.Snapshotter, name, parent string) error {
	if _, err := s.Prepare(ctx, name+"-a", parent); err != nil {
		return err
	}
	return s.Commit(ctx, name, name+"-a")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestTooManyLayers checks that a chain whose lowerdir list would overflow
// the kernel's one-page mount data is refused at Prepare, with the layer
// count in the message, instead of failing later at mount time.
func TestTooManyLayers(t *testing.T) {
	ctx := t.Context()
	root := filepath.Join(t.TempDir(), strings.Repeat("long-path-", 20))
	s := open(t, root)
	t.Cleanup(func() { s.Close() })
	parent := ""
	var longest []snapshot.Mount                // the longest chain that was accepted
	for i := range snapshot.MaxMountDataLen() { // far more than can fit
		key := fmt.Sprintf("layer%d", i)
		mounts, err := s.Prepare(ctx, key+"-a", parent)
		if errors.Is(err, overlay.ErrTooManyLayers) {
			if i < 2 {
				t.Fatalf("refused at %d layers: %v", i, err)
			}
			if _, err := s.Stat(ctx, key+"-a"); !errors.Is(err, snapshot.ErrNotFound) {
				t.Errorf("refused snapshot was recorded: %v", err)
			}
			// The limit is the kernel's, not a guess: the longest accepted
			// chain mounts.
			testutil.RequireRoot(t)
			target := t.TempDir()
			must(t, snapshot.MountAll(longest, target))
			must(t, snapshot.Unmount(target))
			return
		}
		must(t, err)
		must(t, s.Commit(ctx, key, key+"-a"))
		parent, longest = key, mounts
	}
	t.Fatal("never refused a chain")
}

func TestRefusedRoots(t *testing.T) {
	cases := []struct {
		name string
		root func(t *testing.T) string
	}{
		{"colon in path", func(t *testing.T) string { return filepath.Join(t.TempDir(), "a:b") }},
		{"comma in path", func(t *testing.T) string { return filepath.Join(t.TempDir(), "a,b") }},
		{"on overlayfs", overlayRoot},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := overlay.New(tc.root(t), snapshottest.Logger(t))
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, overlay.ErrUnsupportedRoot) {
				t.Fatalf("New: %v, want ErrUnsupportedRoot", err)
			}
		})
	}
}

// overlayRoot mounts a small overlayfs and returns a directory on it.
func overlayRoot(t *testing.T) string {
	testutil.RequireRoot(t)
	base := t.TempDir()
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		must(t, os.Mkdir(filepath.Join(base, d), 0o755))
	}
	merged := filepath.Join(base, "merged")
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", base, base, base)
	must(t, unix.Mount("overlay", merged, "overlay", 0, opts))
	t.Cleanup(func() { snapshot.Unmount(merged) })
	return filepath.Join(merged, "root")
}

// TestOrphansRemoved checks that a snapshot directory the metadata does
// not know (a crash inside Prepare or Remove) is deleted on open.
func TestOrphansRemoved(t *testing.T) {
	root := t.TempDir()
	s := open(t, root)
	_, err := s.Prepare(t.Context(), "kept", "")
	must(t, err)
	must(t, s.Close())
	orphan := filepath.Join(root, "snapshots", "999", "fs")
	must(t, os.MkdirAll(orphan, 0o755))

	s = open(t, root)
	defer s.Close()
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan still there: %v", err)
	}
	if _, err := s.Stat(t.Context(), "kept"); err != nil {
		t.Errorf("known snapshot lost: %v", err)
	}
}
