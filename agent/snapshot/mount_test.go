package snapshot_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/agent/snapshot/snapshottest"
	"github.com/godwit/godwit/internal/testutil"
)

func bind(source string, opts ...string) snapshot.Mount {
	return snapshot.Mount{Type: snapshot.MountTypeBind, Source: source, Options: opts}
}

// dirWith returns a new directory holding one file, name, with content
// name.
func dirWith(t *testing.T, name string) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestMountAll(t *testing.T) {
	testutil.RequireRoot(t)
	cases := []struct {
		name      string
		mounts    func(t *testing.T) []snapshot.Mount
		wantErr   error // nil: must succeed
		wantFile  string
		wantWrite error
	}{
		{
			name:      "read-write bind",
			mounts:    func(t *testing.T) []snapshot.Mount { return []snapshot.Mount{bind(dirWith(t, "a"), "rbind", "rw")} },
			wantFile:  "a",
			wantWrite: nil,
		},
		{
			name:      "read-only bind",
			mounts:    func(t *testing.T) []snapshot.Mount { return []snapshot.Mount{bind(dirWith(t, "a"), "rbind", "ro")} },
			wantFile:  "a",
			wantWrite: unix.EROFS,
		},
		{
			name: "stacked: the last is on top",
			mounts: func(t *testing.T) []snapshot.Mount {
				return []snapshot.Mount{bind(dirWith(t, "below"), "bind"), bind(dirWith(t, "above"), "bind", "ro")}
			},
			wantFile:  "above",
			wantWrite: unix.EROFS,
		},
		{
			name: "second fails: first is undone",
			mounts: func(t *testing.T) []snapshot.Mount {
				return []snapshot.Mount{bind(dirWith(t, "a")), bind(filepath.Join(t.TempDir(), "missing"))}
			},
			wantErr: unix.ENOENT,
		},
		{
			name: "options over a page",
			mounts: func(t *testing.T) []snapshot.Mount {
				return []snapshot.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + strings.Repeat("/x", snapshot.MaxMountDataLen())}}}
			},
			wantErr: snapshot.ErrMountOptionsTooLong,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target := t.TempDir()
			err := snapshot.MountAll(tc.mounts(t), target)
			t.Cleanup(func() { snapshot.Unmount(target) })
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("MountAll: %v, want %v", err, tc.wantErr)
				}
				if snapshottest.Mounted(t, target) {
					t.Error("a failed MountAll left a mount behind")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(target, tc.wantFile)); err != nil {
				t.Errorf("%s not visible through the mount: %v", tc.wantFile, err)
			}
			err = os.WriteFile(filepath.Join(target, "new"), nil, 0o644)
			if !errors.Is(err, tc.wantWrite) {
				t.Errorf("write through the mount: %v, want %v", err, tc.wantWrite)
			}
			if err := snapshot.Unmount(target); err != nil {
				t.Fatalf("unmount: %v", err)
			}
			if snapshottest.Mounted(t, target) {
				t.Error("Unmount left a mount on the target")
			}
		})
	}
}

func TestUnmountIsIdempotent(t *testing.T) {
	testutil.RequireRoot(t)
	cases := []struct {
		name   string
		target func(t *testing.T) string
	}{
		{"not a mount point", func(t *testing.T) string { return t.TempDir() }},
		{"missing path", func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") }},
		{"already unmounted", func(t *testing.T) string {
			target := t.TempDir()
			if err := snapshot.MountAll([]snapshot.Mount{bind(t.TempDir())}, target); err != nil {
				t.Fatal(err)
			}
			if err := snapshot.Unmount(target); err != nil {
				t.Fatal(err)
			}
			return target
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := snapshot.Unmount(tc.target(t)); err != nil {
				t.Errorf("Unmount: %v, want nil", err)
			}
		})
	}
}

// TestUnmountBusy checks that a mount still in use (a process has its
// working directory there) is detached rather than left in place.
func TestUnmountBusy(t *testing.T) {
	testutil.RequireRoot(t)
	target := t.TempDir()
	if err := snapshot.MountAll([]snapshot.Mount{bind(dirWith(t, "a"))}, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { snapshot.Unmount(target) })
	busy, err := os.Open(filepath.Join(target, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := snapshot.Unmount(target); err != nil {
		t.Fatalf("Unmount of a busy mount: %v", err)
	}
	if snapshottest.Mounted(t, target) {
		t.Error("busy mount is still attached")
	}
}
