package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/checkpoint/criuimg"
	"github.com/godwit/godwit/agent/runtime"
	"github.com/godwit/godwit/migrate"
)

// Pre-copy, the agent's side (migrate/README.md): the source pre-dumps the
// running container round by round (`runc checkpoint --pre-dump`, each
// round with the one before as its parent, so that CRIU writes only the
// pages dirtied since), seals each round like a checkpoint and sends it;
// the destination keeps the rounds it received, verified. The final dump
// takes the last round as its parent, and a restore of it on either side
// links the rounds back together, after verifying every one, before CRIU
// reads them.
//
// Layout, beside the migration's checkpoint on both sides:
//
//	checkpoints/.pre-dumps-<id>/<round>/   one sealed round (manifest.json,
//	                                       config.json, criu/)
//
// CRIU links an image directory to its parent with a symlink, criu/parent.
// A sealed checkpoint holds regular files only (bundle), so the links live
// only while CRIU works: made before a dump or restore, removed after.

const (
	// preDumpsPrefix names the directory of a migration's rounds; the dot
	// keeps it out of the checkpoint list.
	preDumpsPrefix = ".pre-dumps-"
	// preDumpWorkPrefix names a round's CRIU work directory, inside the
	// migration's rounds, removed once the round is sealed.
	preDumpWorkPrefix = "work-"
	// criuParentLink is the link CRIU makes in an image directory to the
	// images of the dump before (its --parent-path).
	criuParentLink = "parent"
)

func (a *Agent) preDumpsDir(id string) string {
	return filepath.Join(a.cfg.checkpointsDir(), preDumpsPrefix+id)
}

func (a *Agent) preDumpDir(id string, round int) string {
	return filepath.Join(a.preDumpsDir(id), strconv.Itoa(round))
}

// preDumpImages is round's CRIU image directory.
func (a *Agent) preDumpImages(id string, round int) string {
	return filepath.Join(a.preDumpDir(id, round), bundle.CRIUDir)
}

// sealedRounds is how many rounds of migration id this node holds sealed:
// rounds 1 to n, each with its manifest.
func (a *Agent) sealedRounds(id string) int {
	n := 0
	for {
		if _, err := os.Stat(filepath.Join(a.preDumpDir(id, n+1), bundle.ManifestName)); err != nil {
			return n
		}
		n++
	}
}

// MigratePreDump pre-dumps the migrating container, which keeps running,
// as pre-copy round round of migration id, and seals the round. Rounds
// come in order from 1; repeating one that is sealed reports it again.
// It needs the kernel's soft-dirty tracking: without it runc refuses (as
// `godwit doctor` says beforehand).
func (a *Agent) MigratePreDump(ctx context.Context, id string, round int) (migrate.PreCopyIteration, error) {
	rec, unlock, err := a.migration(id, migrate.RoleSource, false)
	if err != nil {
		return migrate.PreCopyIteration{}, err
	}
	defer unlock()
	if m, err := bundle.ReadManifest(a.preDumpDir(id, round)); err == nil {
		return preDumpIteration(m), nil // done already
	}
	switch held := a.sealedRounds(id); {
	case rec.Phase == migrate.PhaseAborted:
		return migrate.PreCopyIteration{}, fenced(id, migrate.ErrAborted)
	case rec.Container == "":
		return migrate.PreCopyIteration{}, errorf(ErrInvalidState, "migration %s: no container recorded: describe it first", id)
	case fileExists(a.checkpointDir(id)):
		return migrate.PreCopyIteration{}, errorf(ErrInvalidState, "migration %s: the container is dumped already: pre-copy rounds come before the dump", id)
	case round != held+1:
		return migrate.PreCopyIteration{}, errorf(ErrInvalid, "migration %s: pre-copy round %d asked for, node %s holds rounds 1 to %d: rounds come in order",
			id, round, a.cfg.Name, held)
	}
	m, err := a.preDump(ctx, id, rec.Container, round)
	if err != nil {
		return migrate.PreCopyIteration{}, err
	}
	if rec.Phase == migrate.PhasePrepare {
		if err := a.advance(rec, migrate.PhaseSync); err != nil {
			return migrate.PreCopyIteration{}, err
		}
	}
	return preDumpIteration(m), nil
}

// preDump runs round round's pre-dump of container ref and seals it.
func (a *Agent) preDump(ctx context.Context, id, ref string, round int) (_ *bundle.Manifest, err error) {
	e, img, err := a.lockRunning(ctx, ref, "pre-dumped")
	if err != nil {
		return nil, err
	}
	defer e.op.Unlock()
	c := e.c
	staging := filepath.Join(a.preDumpsDir(id), stagingPrefix+strconv.Itoa(round))
	work := filepath.Join(a.preDumpsDir(id), preDumpWorkPrefix+strconv.Itoa(round))
	for _, dir := range []string{staging, work} {
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("migration %s: pre-copy round %d: %w", id, round, err)
		}
	}
	defer os.RemoveAll(work)
	defer func() {
		if err != nil {
			os.RemoveAll(staging)
		}
	}()
	criuDir := filepath.Join(staging, bundle.CRIUDir)
	if err := os.MkdirAll(criuDir, 0o700); err != nil {
		return nil, fmt.Errorf("migration %s: pre-copy round %d: %w", id, round, err)
	}
	dump := runtime.CheckpointOptions{
		ImagePath:      criuDir,
		WorkPath:       work,
		LeaveRunning:   true,
		TCPEstablished: true,
		ExtraArgs:      []string{"--pre-dump"},
	}
	if round > 1 {
		unlink, err := a.linkRounds(id, round-1)
		if err != nil {
			return nil, fmt.Errorf("migration %s: pre-copy round %d: %w", id, round, err)
		}
		defer unlink()
		args, err := parentPathArgs(criuDir, a.preDumpImages(id, round-1))
		if err != nil {
			return nil, fmt.Errorf("migration %s: pre-copy round %d: %w", id, round, err)
		}
		dump.ExtraArgs = append(dump.ExtraArgs, args...)
	}
	if err := a.runc.Checkpoint(ctx, c.ID, dump); err != nil {
		return nil, fmt.Errorf("container %s: pre-copy round %d (it needs the kernel's soft-dirty tracking: see `godwit doctor`): %w", c.Name, round, err)
	}
	if err := unlinkParentImages(criuDir); err != nil {
		return nil, err
	}
	spec, err := os.ReadFile(filepath.Join(a.paths(c.ID).bundle(), bundle.SpecName))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(staging, bundle.SpecName), spec, 0o600); err != nil {
		return nil, err
	}
	m := &bundle.Manifest{
		ID:        id,
		Container: bundle.Container{Name: c.Name, ID: c.ID, Labels: c.Labels, IP: c.IP},
		Image:     bundle.Image{Name: c.Image},
		Host:      a.host(),
		Spec:      bundle.SpecName,
		Options:   bundle.Options{TCPEstablished: true, LeaveRunning: true},
	}
	for _, l := range img.Layers {
		m.Image.Layers = append(m.Image.Layers, l.Digest)
	}
	if st, err := criuimg.ReadStats(work); err == nil && st.Dump != nil {
		d := st.Dump
		m.Stats = bundle.Stats{
			FreezingTimeUs: d.FreezingTime.Microseconds(), FrozenTimeUs: d.FrozenTime.Microseconds(),
			MemdumpTimeUs: d.MemdumpTime.Microseconds(), MemwriteTimeUs: d.MemwriteTime.Microseconds(),
			PagesScanned: d.PagesScanned, PagesSkippedParent: d.PagesSkippedParent, PagesWritten: d.PagesWritten,
		}
	} else {
		// Without CRIU's count the round's dirty pages are unknown, and
		// the convergence rules would decide on nothing.
		return nil, fmt.Errorf("migration %s: pre-copy round %d: no CRIU statistics in %s: %v", id, round, work, err)
	}
	if err := bundle.WriteManifest(staging, m); err != nil {
		return nil, err
	}
	if err := os.Rename(staging, a.preDumpDir(id, round)); err != nil {
		return nil, err
	}
	a.log.Info("pre-copy round sealed", "migration", id, "container", c.Name, "round", round,
		"dirty_pages", m.Stats.PagesWritten, "bytes", m.Size())
	return m, nil
}

// preDumpIteration is what a sealed round copied, as the driver sees it.
func preDumpIteration(m *bundle.Manifest) migrate.PreCopyIteration {
	st := m.Stats
	return migrate.PreCopyIteration{
		DirtyPages: st.PagesWritten,
		Duration:   time.Duration(st.FreezingTimeUs+st.FrozenTimeUs+st.MemwriteTimeUs) * time.Microsecond,
		Bytes:      m.Size(),
	}
}

// MigrateSendPreDump streams sealed round round of migration id to w, the
// destination's data connection, reporting progress.
func (a *Agent) MigrateSendPreDump(ctx context.Context, id string, round int, w io.Writer, progress func(done, total int64)) error {
	rec, unlock, err := a.migration(id, migrate.RoleSource, false)
	if err != nil {
		return err
	}
	defer unlock()
	if rec.Phase == migrate.PhaseAborted {
		return fenced(id, migrate.ErrAborted)
	}
	dir := a.preDumpDir(id, round)
	if _, err := bundle.ReadManifest(dir); err != nil {
		return errorf(ErrNotFound, "migration %s: node %s holds no pre-copy round %d: pre-dump it first", id, a.cfg.Name, round)
	}
	// Uncompressed, like the checkpoint: memory pages hardly compress.
	return bundle.Export(ctx, dir, w, bundle.ExportOptions{Compression: bundle.NoCompression, Progress: progress})
}

// MigrateReceivePreDump imports round round of migration id from r,
// checking every digest. A round already here is left as it is (the
// caller drains r).
func (a *Agent) MigrateReceivePreDump(ctx context.Context, id string, round int, r io.Reader) (migrate.Phase, error) {
	rec, unlock, err := a.migration(id, migrate.RoleDestination, false)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := bundle.ReadManifest(a.preDumpDir(id, round)); err == nil {
		return rec.Phase, nil // received already
	}
	switch {
	case rec.Phase == migrate.PhaseAborted:
		return rec.Phase, fenced(id, migrate.ErrAborted)
	case round < 1:
		return rec.Phase, errorf(ErrInvalid, "migration %s: pre-copy round %d: rounds count from 1", id, round)
	}
	if err := os.MkdirAll(a.preDumpsDir(id), 0o700); err != nil {
		return rec.Phase, err
	}
	if _, err := bundle.Import(ctx, r, a.preDumpDir(id, round), bundle.ImportOptions{}); err != nil {
		return rec.Phase, errorf(ErrInvalid, "migration %s: pre-copy round %d refused: %w", id, round, err)
	}
	if rec.Phase == migrate.PhasePrepare {
		if err := a.advance(rec, migrate.PhaseSync); err != nil {
			return rec.Phase, err
		}
	}
	return rec.Phase, nil
}

// preCopyParent prepares the final dump of migration id on the source,
// after rounds pre-copy rounds: it checks that this node holds exactly
// them and links them together for CRIU. It returns the images the dump
// takes as its parent (CheckpointRequest.ParentImages) and what removes
// the links again; with no rounds, "" and a no-op.
func (a *Agent) preCopyParent(id string, rounds int) (parent string, unlink func(), err error) {
	if rounds == 0 {
		return "", func() {}, nil
	}
	if held := a.sealedRounds(id); held != rounds {
		return "", nil, errorf(ErrInvalidState, "migration %s: the final dump builds on pre-copy round %d, but node %s holds rounds 1 to %d: start a new migration",
			id, rounds, a.cfg.Name, held)
	}
	unlink, err = a.linkRounds(id, rounds)
	if err != nil {
		return "", nil, err
	}
	return a.preDumpImages(id, rounds), unlink, nil
}

// linkPreCopied verifies the rounds a pre-copied checkpoint in dir builds
// on, and links the checkpoint and the rounds together for CRIU's
// restore; unlink removes the links again, so that the checkpoint verifies
// as a bundle afterwards. With no rounds it does nothing.
func (a *Agent) linkPreCopied(id, dir string, rounds int) (unlink func(), err error) {
	if rounds == 0 {
		return func() {}, nil
	}
	if held := a.sealedRounds(id); held < rounds {
		return nil, errorf(ErrInvalidState, "migration %s: the checkpoint builds on pre-copy round %d, but node %s holds rounds 1 to %d",
			id, rounds, a.cfg.Name, held)
	}
	// CRIU reads the rounds' pages too: each is checked like the
	// checkpoint, before CRIU reads anything.
	for r := 1; r <= rounds; r++ {
		if _, err := bundle.Verify(a.preDumpDir(id, r)); err != nil {
			return nil, fmt.Errorf("migration %s: pre-copy round %d: %w", id, r, err)
		}
	}
	unlinkRounds, err := a.linkRounds(id, rounds)
	if err != nil {
		return nil, err
	}
	criuDir := filepath.Join(dir, bundle.CRIUDir)
	if err := linkParentImages(criuDir, a.preDumpImages(id, rounds)); err != nil {
		unlinkRounds()
		return nil, err
	}
	return func() {
		if err := unlinkParentImages(criuDir); err != nil {
			a.log.Warn("remove the link to the pre-copy rounds", "migration", id, "err", err)
		}
		unlinkRounds()
	}, nil
}

// linkRounds links rounds 2 to last of migration id each to the round
// before, as CRIU made them; unlink removes the links.
func (a *Agent) linkRounds(id string, last int) (unlink func(), err error) {
	unlink = func() {
		for r := 2; r <= last; r++ {
			if err := unlinkParentImages(a.preDumpImages(id, r)); err != nil {
				a.log.Warn("remove a pre-copy round's parent link", "migration", id, "round", r, "err", err)
			}
		}
	}
	for r := 2; r <= last; r++ {
		if err := linkParentImages(a.preDumpImages(id, r), a.preDumpImages(id, r-1)); err != nil {
			unlink()
			return nil, fmt.Errorf("migration %s: link pre-copy round %d to round %d: %w", id, r, r-1, err)
		}
	}
	return unlink, nil
}

// dropPreDumps removes migration id's rounds, once the migration is done
// or aborted.
func (a *Agent) dropPreDumps(id string) {
	if err := os.RemoveAll(a.preDumpsDir(id)); err != nil {
		a.log.Warn("remove the migration's pre-copy rounds", "migration", id, "err", err)
	}
}

// parentPathArgs are runc's arguments that make the dump into criuDir
// build on the images in parent: CRIU takes the path relative to the
// image directory, and links criuDir/parent to it.
func parentPathArgs(criuDir, parent string) ([]string, error) {
	rel, err := filepath.Rel(criuDir, parent)
	if err != nil {
		return nil, fmt.Errorf("parent images %s: %w", parent, err)
	}
	return []string{"--parent-path", rel}, nil
}

// linkParentImages makes criuDir/parent point to parent, relative, as
// CRIU does; a link already there is replaced.
func linkParentImages(criuDir, parent string) error {
	rel, err := filepath.Rel(criuDir, parent)
	if err != nil {
		return fmt.Errorf("parent images %s: %w", parent, err)
	}
	link := filepath.Join(criuDir, criuParentLink)
	if err := unlinkParentImages(criuDir); err != nil {
		return err
	}
	if err := os.Symlink(rel, link); err != nil {
		return fmt.Errorf("link %s to its parent images: %w", criuDir, err)
	}
	return nil
}

// unlinkParentImages removes criuDir/parent when it is a link. Anything
// else of that name is left for bundle's checks to refuse.
func unlinkParentImages(criuDir string) error {
	link := filepath.Join(criuDir, criuParentLink)
	info, err := os.Lstat(link)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case info.Mode()&fs.ModeSymlink == 0:
		return nil
	}
	if err := os.Remove(link); err != nil {
		return fmt.Errorf("remove the link to %s's parent images: %w", criuDir, err)
	}
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// restoreMigrated runs container ref on the source again from migration
// id's checkpoint, after an abort: like Restore, with the pre-copy rounds
// the checkpoint may build on verified and linked to it first.
func (a *Agent) restoreMigrated(ctx context.Context, id, ref string) error {
	rounds := a.sealedRounds(id)
	if rounds == 0 {
		_, err := a.Restore(ctx, RestoreRequest{Container: ref, CheckpointID: id})
		return err
	}
	dir := a.checkpointDir(id)
	m, err := bundle.Verify(dir)
	if err != nil {
		return fmt.Errorf("migration %s: %w", id, err)
	}
	unlink, err := a.linkPreCopied(id, dir, rounds)
	if err != nil {
		return err
	}
	defer unlink()
	_, err = a.restore(ctx, dir, m, "", false)
	return err
}
