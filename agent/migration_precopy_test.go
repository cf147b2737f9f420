package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
)

// sealTestRound writes a sealed bundle in dir with one page image, as a
// pre-copy round (or the final checkpoint) is sealed.
func sealTestRound(t *testing.T, dir, page string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, bundle.CRIUDir), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		filepath.Join(bundle.CRIUDir, "pages-1.img"): page,
		bundle.SpecName: "{}",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := &bundle.Manifest{ID: "m1", Container: bundle.Container{Name: "web"}, Image: bundle.Image{Name: "busybox"},
		Host: bundle.HostInfo{Node: "a", Kernel: "6.18.44", CRIUVersion: "4.2.1", RuncVersion: "1.3.6"}, Spec: bundle.SpecName}
	if err := bundle.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
}

func preCopyTestAgent(t *testing.T) *Agent {
	return &Agent{cfg: Config{Name: "a", DataDir: t.TempDir()}, log: slog.New(slog.DiscardHandler)}
}

// TestLinkPreCopied: a restore of a pre-copied checkpoint sees the chain
// CRIU made (checkpoint -> last round -> ... -> round 1), only after every
// round verified; afterwards the links are gone, so that the checkpoint
// and the rounds verify as bundles again.
func TestLinkPreCopied(t *testing.T) {
	a := preCopyTestAgent(t)
	const rounds = 3
	for r := 1; r <= rounds; r++ {
		sealTestRound(t, a.preDumpDir("m1", r), "round "+strconv.Itoa(r))
	}
	final := a.checkpointDir("m1")
	sealTestRound(t, final, "final")
	if got := a.sealedRounds("m1"); got != rounds {
		t.Fatalf("sealedRounds = %d, want %d", got, rounds)
	}

	unlink, err := a.linkPreCopied("m1", final, rounds)
	if err != nil {
		t.Fatal(err)
	}
	// Follow the chain as CRIU does, reading each parent's page.
	var pages []string
	dir := filepath.Join(final, bundle.CRIUDir)
	for {
		data, err := os.ReadFile(filepath.Join(dir, "pages-1.img"))
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, string(data))
		next := filepath.Join(dir, criuParentLink)
		if _, err := os.Lstat(next); err != nil {
			break
		}
		dir = next
	}
	if want := []string{"final", "round 3", "round 2", "round 1"}; !slices.Equal(pages, want) {
		t.Errorf("the chain reads %q, want %q", pages, want)
	}
	if target, _ := os.Readlink(filepath.Join(final, bundle.CRIUDir, criuParentLink)); filepath.IsAbs(target) {
		t.Errorf("link %q is absolute: it must survive the checkpoint's move", target)
	}

	unlink()
	for _, d := range []string{final, a.preDumpDir("m1", 1), a.preDumpDir("m1", 2), a.preDumpDir("m1", 3)} {
		if _, err := bundle.Verify(d); err != nil {
			t.Errorf("%s does not verify once unlinked: %v", d, err)
		}
	}
}

func TestLinkPreCopiedRefuses(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(t *testing.T, a *Agent)
		rounds  int
		errFrag string
	}{
		{name: "a tampered round", rounds: 2, errFrag: "pre-copy round 2",
			edit: func(t *testing.T, a *Agent) {
				if err := os.WriteFile(filepath.Join(a.preDumpImages("m1", 2), "pages-1.img"), []byte("evil"), 0o600); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "a missing round", rounds: 3, errFrag: "holds rounds 1 to 2", edit: func(*testing.T, *Agent) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := preCopyTestAgent(t)
			for r := 1; r <= 2; r++ {
				sealTestRound(t, a.preDumpDir("m1", r), "round "+strconv.Itoa(r))
			}
			final := a.checkpointDir("m1")
			sealTestRound(t, final, "final")
			tt.edit(t, a)
			if _, err := a.linkPreCopied("m1", final, tt.rounds); err == nil || !strings.Contains(err.Error(), tt.errFrag) {
				t.Fatalf("linkPreCopied = %v, want a refusal naming %q", err, tt.errFrag)
			}
			if _, err := os.Lstat(filepath.Join(final, bundle.CRIUDir, criuParentLink)); err == nil {
				t.Error("a refused link left the checkpoint linked: CRIU could read an unverified round")
			}
		})
	}
}

// TestPreDumpRoundsInOrder: the source refuses a round out of order before
// it touches the container, and reports a sealed round again.
func TestPreDumpRoundsInOrder(t *testing.T) {
	a := preCopyTestAgent(t)
	sealTestRound(t, a.preDumpDir("m1", 1), "round 1")
	if _, _, err := a.preCopyParent("m1", 2); err == nil || !strings.Contains(err.Error(), "holds rounds 1 to 1") {
		t.Errorf("preCopyParent(2) with one round = %v, want a refusal", err)
	}
	parent, unlink, err := a.preCopyParent("m1", 1)
	if err != nil || parent != a.preDumpImages("m1", 1) {
		t.Fatalf("preCopyParent(1) = %q, %v; want round 1's images", parent, err)
	}
	unlink()
	if parent, _, err := a.preCopyParent("m1", 0); err != nil || parent != "" {
		t.Errorf("preCopyParent(0) = %q, %v; want no parent", parent, err)
	}

	m, err := bundle.ReadManifest(a.preDumpDir("m1", 1))
	if err != nil {
		t.Fatal(err)
	}
	m.Stats = bundle.Stats{PagesWritten: 1234, FreezingTimeUs: 1000, FrozenTimeUs: 2000, MemwriteTimeUs: 7000}
	it := preDumpIteration(m)
	if it.DirtyPages != 1234 || it.Duration.Milliseconds() != 10 || it.Bytes != m.Size() {
		t.Errorf("iteration %+v, want 1234 pages, 10ms, %d bytes", it, m.Size())
	}
}

func TestParentLinks(t *testing.T) {
	dir := t.TempDir()
	criuDir := filepath.Join(dir, ".new-m1", bundle.CRIUDir)
	parent := filepath.Join(dir, preDumpsPrefix+"m1", "2", bundle.CRIUDir)
	for _, d := range []string{criuDir, parent} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	args, err := parentPathArgs(criuDir, parent)
	if want := []string{"--parent-path", "../../.pre-dumps-m1/2/criu"}; err != nil || !slices.Equal(args, want) {
		t.Errorf("parentPathArgs = %q, %v; want %q (relative to the image dir, as CRIU takes it)", args, err, want)
	}
	if err := linkParentImages(criuDir, parent); err != nil {
		t.Fatal(err)
	}
	if err := linkParentImages(criuDir, parent); err != nil {
		t.Fatalf("linking again: %v", err)
	}
	if got, _ := filepath.EvalSymlinks(filepath.Join(criuDir, criuParentLink)); got != parent {
		t.Errorf("link resolves to %q, want %q", got, parent)
	}
	if err := unlinkParentImages(criuDir); err != nil {
		t.Fatal(err)
	}
	if err := unlinkParentImages(criuDir); err != nil {
		t.Fatalf("unlinking again: %v", err)
	}
	// A regular file of that name is not CRIU's link: left for the
	// bundle's checks.
	if err := os.WriteFile(filepath.Join(criuDir, criuParentLink), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unlinkParentImages(criuDir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(criuDir, criuParentLink)); err != nil {
		t.Errorf("a regular file named parent was removed: %v", err)
	}
}
