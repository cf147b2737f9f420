package benchutil

import (
	"context"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit/godwit/internal/testutil"
)

func TestRemoveWorkDir(t *testing.T) {
	t.Run("removes the tree", func(t *testing.T) {
		work := filepath.Join(t.TempDir(), "work")
		writeFile(t, work, "godwit/src/data/a", "x")
		writeFile(t, work, "workload.tar", "x")
		if err := RemoveWorkDir(work); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(work); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there after RemoveWorkDir: %v", work, err)
		}
	})
	t.Run("keeps everything while something is mounted under it", func(t *testing.T) {
		testutil.RequireRoot(t)
		work := filepath.Join(t.TempDir(), "work")
		writeFile(t, work, "archive", "x")
		mnt := filepath.Join(work, "godwit", "rootfs")
		mountTmpfs(t, mnt)
		writeFile(t, mnt, "on-the-mount", "x")

		err := RemoveWorkDir(work)
		if err == nil || !strings.Contains(err.Error(), mnt+" is still mounted") {
			t.Fatalf("RemoveWorkDir = %v, want an error naming %s", err, mnt)
		}
		for _, f := range []string{filepath.Join(work, "archive"), filepath.Join(mnt, "on-the-mount")} {
			if _, err := os.Stat(f); err != nil {
				t.Errorf("RemoveWorkDir refused but removed %s: %v", f, err)
			}
		}
	})
	t.Run("a mount beside it with the same prefix does not count", func(t *testing.T) {
		testutil.RequireRoot(t)
		parent := t.TempDir()
		work := filepath.Join(parent, "work")
		writeFile(t, work, "archive", "x")
		mountTmpfs(t, filepath.Join(parent, "work2", "mnt"))
		if err := RemoveWorkDir(work); err != nil {
			t.Fatalf("RemoveWorkDir(%s) with a mount only under %s2: %v", work, work, err)
		}
	})
}

func TestBuildGodwit(t *testing.T) {
	dir := t.TempDir()
	bin, err := BuildGodwit(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "bin", "godwit"); bin != want {
		t.Errorf("BuildGodwit = %s, want %s", bin, want)
	}
	// CGO_ENABLED=0, as `make build`: a static binary names no dynamic
	// loader.
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a dynamic loader: it was not built with CGO_ENABLED=0", bin)
		}
	}
	if out, err := exec.Command(bin, "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "agent") {
		t.Errorf("%s --help: %v\n%s", bin, err, out)
	}
}
