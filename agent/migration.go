package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/network"
	"github.com/godwit/godwit/agent/runtime"
	"github.com/godwit/godwit/internal/failpoint"
	"github.com/godwit/godwit/internal/memreserve"
	"github.com/godwit/godwit/migrate"
)

// migrations is the agent's side of live migrations: one journal record
// per migration ID (the container, the phase reached) and a lock per ID,
// so that every step is done once however often the driver repeats it.
// The migration's checkpoint has the migration's ID, on both sides.
type migrations struct {
	journal migrationJournal // an observedJournal, which tells Config.Observer (observer.go)
	mu      sync.Mutex
	locks   map[string]*sync.Mutex
	holds   map[string]*network.Hold // packets held during a source's freeze (migration_hold.go)
	// receipts are the checkpoints received and checked, for the restore
	// (migration_transfer.go).
	receipts map[string]*bundle.Receipt
	// pages are the page servers, lazy dumps and lazy restores of stream
	// and post-copy migrations (migration_stream.go).
	pages *pagesState
	// reserves are the memory faulted in ahead of the freeze, by
	// migration and step (migration_reserve.go).
	reserves map[reserveKey]*memreserve.Process
}

func (a *Agent) migrationsDir() string { return filepath.Join(a.cfg.DataDir, "migrations") }

// migration locks migration id and returns its record, or a new one in
// PhasePrepare when create is set, for this agent's role in it. A record
// of the other role is refused: the call was meant for the other agent.
// unlock must be called.
func (a *Agent) migration(id, role string, create bool) (rec *migrate.Record, unlock func(), err error) {
	a.mig.mu.Lock()
	l, ok := a.mig.locks[id]
	if !ok {
		l = &sync.Mutex{}
		a.mig.locks[id] = l
	}
	a.mig.mu.Unlock()
	l.Lock()
	rec, err = a.mig.journal.Get(id)
	if errors.Is(err, migrate.ErrUnknownMigration) && create {
		rec, err = migrate.NewRecord(id, migrate.StopCopy, time.Now()), nil
	}
	if err != nil {
		l.Unlock()
		return nil, nil, errorf(ErrNotFound, "%w", err)
	}
	switch {
	case rec.Role == "":
		rec.Role = role
	case rec.Role != role:
		l.Unlock()
		return nil, nil, errorf(ErrInvalidState, "migration %s: node %s is its %s, not its %s: check the agents' order (--from-agent, --to-agent)",
			id, a.cfg.Name, rec.Role, role)
	}
	return rec, l.Unlock, nil
}

// advance moves rec to phase p and persists it.
func (a *Agent) advance(rec *migrate.Record, p migrate.Phase) error {
	return a.advanceAt(rec, p, time.Now())
}

// advanceAt is advance for a phase that began at at: a dump records
// when it froze the container, where the downtime starts (observer.go).
func (a *Agent) advanceAt(rec *migrate.Record, p migrate.Phase, at time.Time) error {
	if _, err := rec.Advance(p, at); err != nil {
		return migrationError(err)
	}
	return a.mig.journal.Put(rec)
}

// fenced is the refusal of a call on migration id whose record is past
// what the call needs (migrate.ErrAborted, ErrCommitted).
func fenced(id string, sentinel error) error {
	return migrationError(fmt.Errorf("migration %s: %w", id, sentinel))
}

// migrationError marks the fencing errors as a refused state change, so
// that the driver can tell them apart.
func migrationError(err error) error {
	if errors.Is(err, migrate.ErrCommitted) || errors.Is(err, migrate.ErrAborted) || errors.Is(err, migrate.ErrBackwards) || errors.Is(err, migrate.ErrNotReady) {
		return errorf(ErrInvalidState, "%w", err)
	}
	return err
}

// MigrateDescribe records migration id on the source and describes the
// container it moves.
func (a *Agent) MigrateDescribe(ctx context.Context, id, ref string, s migrate.Strategy) (migrate.Container, error) {
	rec, unlock, err := a.migration(id, migrate.RoleSource, true)
	if err != nil {
		return migrate.Container{}, err
	}
	defer unlock()
	if rec.Container != "" {
		ref = rec.Container // a repeated call describes what the first recorded
	}
	given := commandGeneration(ctx)
	if err := a.onContainer(ref, func(c *Container) error {
		return a.fenceGeneration("start a migration", c, given, 0)
	}); err != nil {
		return migrate.Container{}, err
	}
	c, err := a.Inspect(ctx, ref)
	if err != nil {
		return migrate.Container{}, err
	}
	img, err := a.images.Get(c.ImageID)
	if err != nil {
		return migrate.Container{}, fmt.Errorf("container %s: image %s: %w", c.Name, c.Image, err)
	}
	out := migrate.Container{Name: c.Name, ID: c.ID, Image: c.Image, IP: c.IP, RootfsFormats: a.rootfsFormats(), Memory: a.containerMemory(c.ID)}
	if s == migrate.StopCopy { // its dump writes the pages to the data dir
		a.reserveMemory(ctx, id, reserveDump, out.Memory)
	}
	for _, l := range img.Layers {
		out.ImageLayers = append(out.ImageLayers, l.Digest.String())
	}
	if rec.Container == "" {
		rec.Container = c.Name
		if err := a.mig.journal.Put(rec); err != nil {
			return migrate.Container{}, err
		}
	}
	return out, nil
}

// MigrateDump checkpoints the migrating container into the checkpoint
// named after the migration, leaving it stopped with its images kept:
// the downtime starts. Repeated, it does nothing.
//
// With opts.PreDumps (pre-copy) the dump builds on the last of the
// rounds this node pre-dumped (migration_precopy.go).
func (a *Agent) MigrateDump(ctx context.Context, id string, opts migrate.DumpOptions) (migrate.Phase, error) {
	rec, unlock, dumped, err := a.lockForDump(ctx, id)
	if err != nil || dumped {
		return rec.Phase, err
	}
	defer unlock()
	parent, unlinkRounds, err := a.preCopyParent(id, opts.PreDumps)
	if err != nil {
		return rec.Phase, err
	}
	defer unlinkRounds()
	// The memory Describe faulted in for the pages, freed for the dump.
	a.releaseMemory(id, reserveDump)
	frozen := time.Now()
	a.holdPackets(ctx, id, rec.Container)
	if _, err := a.checkpoint(ctx, rec.Container, id, CheckpointRequest{ParentImages: parent, rootfsChanges: a.rootfsChanges(id), pendingDigests: true}); err != nil {
		a.releasePackets(ctx, id)
		return rec.Phase, err
	}
	if err := a.advanceAt(rec, migrate.PhaseDump, frozen); err != nil {
		return rec.Phase, err
	}
	failpoint.Hit(FailpointSourceAfterDump)
	return migrate.PhaseDump, nil
}

// lockForDump locks migration id on the source for its dump and returns
// its record; dumped is set, and nothing locked, when the migration's
// checkpoint exists already (a repeated call). An aborted migration is
// refused, and so is a dump with a stale generation (ctx's), and one on
// a node that has not registered since its agent started: it could not
// run the container again after an abort until it has, so the move stops
// before the freeze rather than after it. (A lease that lapsed for a
// moment, as when the schedulers change leaders, does not refuse a dump:
// the node registers again within a heartbeat.) unlock must be called
// unless dumped or err.
func (a *Agent) lockForDump(ctx context.Context, id string) (rec *migrate.Record, unlock func(), dumped bool, err error) {
	rec, unlock, err = a.migration(id, migrate.RoleSource, false)
	if err != nil {
		return &migrate.Record{}, nil, false, err
	}
	if _, err := os.Stat(a.checkpointDir(id)); err == nil {
		unlock()
		return rec, nil, true, nil
	}
	if rec.Phase == migrate.PhaseAborted {
		unlock()
		return rec, nil, false, fenced(id, migrate.ErrAborted)
	}
	if err := a.checkRegistered("dump for a migration", rec.Container); err != nil {
		unlock()
		return rec, nil, false, err
	}
	given := commandGeneration(ctx)
	if err := a.onContainer(rec.Container, func(c *Container) error {
		return a.fenceGeneration("dump for a migration", c, given, 0)
	}); err != nil {
		unlock()
		return rec, nil, false, err
	}
	return rec, unlock, false, nil
}

// Failpoints of the migration code (internal/failpoint), for fault tests.
const (
	// FailpointSourceAfterDump kills the source agent once the container
	// is dumped and stopped, before it answers the driver.
	FailpointSourceAfterDump = "migrate/source/after-dump"
	// FailpointSourceAfterFreeze kills the source agent of a stream or
	// post-copy move once the container is fenced and frozen, before the
	// dump: the agent comes back to a paused container its record says
	// is running.
	FailpointSourceAfterFreeze = "migrate/source/after-freeze"
	// FailpointSourceCorruptSend ("corrupt") flips one bit of the
	// checkpoint the source sends.
	FailpointSourceCorruptSend = "migrate/source/corrupt-send"
	// FailpointDestinationRestore ("fail") makes the destination's
	// restore fail before CRIU runs.
	FailpointDestinationRestore = "migrate/destination/restore"
	// FailpointDestinationRestored stops (or kills) the destination
	// agent once it holds the restored copy, before its record says ready
	// and before it answers: the
	// fault test of a destination cut from the schedulers between its
	// restore and the commit.
	FailpointDestinationRestored = "migrate/destination/restored"
	// FailpointDestinationReceive kills the destination agent as the
	// transfer reaches it.
	FailpointDestinationReceive = "migrate/destination/receive"
)

// MigrateSend streams the migration's checkpoint to w, the destination's
// data connection, reporting progress. checksum is the transfer's (one
// of the destination's MigratePrepare listed; "": sha256).
func (a *Agent) MigrateSend(ctx context.Context, id string, w io.Writer, checksum string, progress func(done, total int64)) error {
	rec, unlock, err := a.migration(id, migrate.RoleSource, false)
	if err != nil {
		return err
	}
	defer unlock()
	if err := a.advance(rec, migrate.PhaseTransfer); err != nil {
		return err
	}
	if failpoint.Armed(FailpointSourceCorruptSend) == failpoint.ActionCorrupt {
		w = &corruptingWriter{w: w, at: corruptOffset}
	}
	// The transfer framing checksums the files as it sends them
	// (migration_transfer.go).
	var sent int64
	opts := bundle.SendOptions{Checksum: bundle.Checksum(checksum), Progress: tally(&sent, progress)}
	if err := bundle.Send(ctx, a.checkpointDir(id), w, opts); err != nil {
		return err
	}
	a.observeTransfer(TransferCheckpoint, sent)
	return nil
}

// corruptOffset is where FailpointSourceCorruptSend flips a byte: past
// the manifest, inside the first image files.
const corruptOffset = 64 << 10

// corruptingWriter flips one bit of the byte at offset at, for the fault
// test of a damaged transfer.
type corruptingWriter struct {
	w    io.Writer
	at   int64
	done int64
}

func (c *corruptingWriter) Write(p []byte) (int, error) {
	if i := c.at - c.done; i >= 0 && i < int64(len(p)) {
		q := append([]byte(nil), p...)
		q[i] ^= 0x01
		p = q
	}
	n, err := c.w.Write(p)
	c.done += int64(n)
	return n, err
}

// MigrateFinish drops the source's stopped copy and the migration's
// checkpoint once the destination runs the container, and forwards the
// container's IP to the destination agent's host (destination is that
// agent's address), so that clients still sending here reach it.
func (a *Agent) MigrateFinish(ctx context.Context, id, destination string) (migrate.Phase, error) {
	rec, unlock, err := a.migration(id, migrate.RoleSource, false)
	if err != nil {
		return "", err
	}
	defer unlock()
	if rec.Phase == migrate.PhaseDone {
		return rec.Phase, nil
	}
	if rec.Phase == migrate.PhaseAborted {
		return rec.Phase, fenced(id, migrate.ErrAborted)
	}
	given := commandGeneration(ctx)
	if err := a.onContainer(rec.Container, func(c *Container) error {
		return a.fenceGeneration("finish a migration", c, given, 0)
	}); err != nil {
		return rec.Phase, err
	}
	if _, ok := rec.Started[migrate.PhaseCommitted]; !ok {
		// The driver finishes once the destination runs the container:
		// the source's downtime ends here (observer.go). The phase
		// itself goes straight to done below.
		rec.Started[migrate.PhaseCommitted] = time.Now()
	}
	if c, err := a.Inspect(ctx, rec.Container); err == nil {
		// Clients first: forward the address and send on the packets
		// held during the freeze before cleaning up.
		if ip := net.ParseIP(c.IP); ip != nil {
			a.forward(ctx, id, ip, destination)
		}
		a.releasePackets(ctx, id)
		if err := a.pagesServed(ctx, rec); err != nil { // migration_postcopy.go
			return rec.Phase, err
		}
		if err := a.Remove(ctx, rec.Container, true); err != nil {
			return rec.Phase, err
		}
	} else if !errors.Is(err, ErrNotFound) {
		return rec.Phase, err
	}
	a.releasePackets(ctx, id) // a retried Finish that finds the container gone already
	if err := os.RemoveAll(a.checkpointDir(id)); err != nil {
		return rec.Phase, err
	}
	a.dropPreDumps(id)
	a.dropRootfs(ctx, id, rec.Container, false) // migration_rootfs.go
	// The source never saw ready and commit: the driver did. Its record
	// goes straight to done.
	rec.Phase = migrate.PhaseDone
	rec.Started[migrate.PhaseDone] = time.Now()
	return rec.Phase, a.mig.journal.Put(rec)
}

// forward routes ip via the host of the agent at address. A failure is
// logged, not returned: the move is done, and the cluster's routes (or the
// scheduler, later) bring clients to the destination anyway.
func (a *Agent) forward(ctx context.Context, id string, ip net.IP, address string) {
	host, _, err := net.SplitHostPort(address)
	gw := net.ParseIP(host)
	if err != nil || gw == nil {
		a.log.Warn("not forwarding the moved container's address: the destination's address has no IP", "migration", id, "destination", address)
		return
	}
	if err := a.net.Forward(ctx, ip, gw); err != nil {
		a.log.Warn("not forwarding the moved container's address", "migration", id, "ip", ip, "err", err)
	}
}

// MigrateResume runs the source's copy again from the migration's
// checkpoint, after the destination acknowledged an abort.
func (a *Agent) MigrateResume(ctx context.Context, id, why string) (migrate.Phase, error) {
	rec, unlock, err := a.migration(id, migrate.RoleSource, false)
	if err != nil {
		return "", err
	}
	defer unlock()
	a.releaseMemory(id, reserveDump) // a move that failed before its dump
	if rec.Phase == migrate.PhaseDone {
		return rec.Phase, fenced(id, migrate.ErrCommitted)
	}
	if rec.Phase != migrate.PhaseAborted { // aborted: resumed already
		if err := a.checkFence("resume after an aborted migration", rec.Container); err != nil {
			return rec.Phase, err
		}
		// The lease is valid, but the cluster may have committed the
		// move elsewhere: the copy here must not run again then.
		given := commandGeneration(ctx)
		if err := a.onContainer(rec.Container, func(c *Container) error {
			return a.fenceRun("resume after an aborted migration", c, given)
		}); err != nil {
			return rec.Phase, err
		}
	}
	// Stream and post-copy keep the container frozen: it runs again as it
	// is, and the stop-copy restore below finds it running.
	if err := a.resumeFrozen(ctx, rec); err != nil { // migration_stream.go
		return rec.Phase, err
	}
	if _, err := os.Stat(a.checkpointDir(id)); err == nil {
		c, err := a.Inspect(ctx, rec.Container)
		if err != nil {
			return rec.Phase, err
		}
		if c.State != StateRunning {
			if err := a.sealForRestore(id); err != nil { // migration_transfer.go
				return rec.Phase, err
			}
			if err := a.restoreMigrated(ctx, id, rec.Container); err != nil { // migration_precopy.go
				return rec.Phase, err
			}
		}
		if err := os.RemoveAll(a.checkpointDir(id)); err != nil {
			a.log.Warn("remove the aborted migration's checkpoint", "migration", id, "err", err)
		}
	}
	a.dropPreDumps(id)
	a.dropRootfs(ctx, id, rec.Container, true) // migration_rootfs.go
	a.releasePackets(ctx, id)
	if _, err := rec.Abort(why, time.Now()); err != nil {
		return rec.Phase, migrationError(err)
	}
	return rec.Phase, a.mig.journal.Put(rec)
}

// MigratePrepare records migration id on the destination and checks that
// it can take the container: its name free, its image here with the same
// layers or not at all; it says which layers it lacks, in which format it
// takes the writable layer's sync (migration_rootfs.go), and which
// checksums it takes on the checkpoint's transfer.
func (a *Agent) MigratePrepare(ctx context.Context, id string, c migrate.Container, s migrate.Strategy) (migrate.Phase, migrate.Prepared, error) {
	rec, unlock, err := a.migration(id, migrate.RoleDestination, true)
	if err != nil {
		return "", migrate.Prepared{}, err
	}
	defer unlock()
	if rec.Phase == migrate.PhaseAborted {
		return rec.Phase, migrate.Prepared{}, fenced(id, migrate.ErrAborted)
	}
	if e, err := a.lookup(c.Name); err == nil && e.c.ID != c.ID {
		return rec.Phase, migrate.Prepared{}, errorf(ErrExists, "container name %s is taken on node %s by another container (%.12s): remove it first", c.Name, a.cfg.Name, e.c.ID)
	}
	if err := a.fenceID("prepare a migration", c.Name, c.ID, commandGeneration(ctx)); err != nil {
		return rec.Phase, migrate.Prepared{}, err
	}
	p, err := a.planRootfs(id, c)
	if err != nil {
		return rec.Phase, migrate.Prepared{}, err
	}
	for _, ck := range bundle.ReceivedChecksums() {
		p.TransferChecksums = append(p.TransferChecksums, string(ck))
	}
	rec.Container, rec.ContainerID = c.Name, c.ID
	if err := a.mig.journal.Put(rec); err != nil { // before the network, so that an abort finds it
		return rec.Phase, migrate.Prepared{}, err
	}
	if s != migrate.PostCopy { // its restore writes the memory inside the freeze
		a.reserveMemory(ctx, id, reserveRestore, c.Memory)
	}
	if s == migrate.StopCopy { // and its transfer writes it into the tmpfs
		a.reserveMemory(ctx, id, reserveReceive, c.Memory)
	}
	return rec.Phase, p, a.prepareNetwork(ctx, c) // migration_network.go
}

// MigrateReceive imports the checkpoint the source sends on r into the
// migration's checkpoint, checking every file's checksum.
func (a *Agent) MigrateReceive(ctx context.Context, id string, r io.Reader) (migrate.Phase, error) {
	rec, unlock, err := a.migration(id, migrate.RoleDestination, false)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := bundle.ReadManifest(a.checkpointDir(id)); err == nil {
		return rec.Phase, nil // received already
	}
	if rec.Phase == migrate.PhaseAborted {
		return rec.Phase, fenced(id, migrate.ErrAborted)
	}
	failpoint.Hit(FailpointDestinationReceive)
	if err := a.receiveCheckpoint(ctx, rec, a.checkpointDir(id), r); err != nil { // migration_transfer.go
		return rec.Phase, errorf(ErrInvalid, "migration %s: checkpoint refused: %w", id, err)
	}
	return migrate.PhaseTransfer, a.advance(rec, migrate.PhaseTransfer)
}

// MigrateRestore restores the received container held stopped: it does
// not run until MigrateCommit.
//
// With opts.PreDumps (pre-copy) the checkpoint's pages not in it are in
// the rounds received; they are verified and linked to it first.
func (a *Agent) MigrateRestore(ctx context.Context, id string, opts migrate.RestoreOptions) (migrate.Phase, error) {
	rec, unlock, err := a.migration(id, migrate.RoleDestination, false)
	if err != nil {
		return "", err
	}
	defer unlock()
	if rec.Phase == migrate.PhaseReady || rec.Phase == migrate.PhaseCommitted || rec.Phase == migrate.PhaseDone {
		return rec.Phase, nil
	}
	given := commandGeneration(ctx)
	if err := a.fenceID("restore a migration", rec.Container, rec.ContainerID, given); err != nil {
		return rec.Phase, err
	}
	dir := a.checkpointDir(id)
	m, err := a.verifyReceived(id, dir) // migration_transfer.go
	if err != nil {
		return rec.Phase, err
	}
	unlinkRounds, err := a.linkPreCopied(id, dir, opts.PreDumps)
	if err != nil {
		return rec.Phase, err
	}
	defer unlinkRounds()
	if err := a.advance(rec, migrate.PhaseRestore); err != nil {
		return rec.Phase, err
	}
	if failpoint.Armed(FailpointDestinationRestore) == failpoint.ActionFail {
		return rec.Phase, fmt.Errorf("migration %s: restore refused by failpoint %s", id, FailpointDestinationRestore)
	}
	// The memory Prepare faulted in for the restore, freed for it.
	a.releaseMemory(id, reserveRestore)
	if _, err := a.restore(ctx, dir, m, "", true); err != nil {
		return rec.Phase, err
	}
	// The held copy is the migration's generation until the commit.
	if err := a.raiseGeneration(rec.Container, given); err != nil {
		return rec.Phase, err
	}
	// Before the record says ready: a driver that asks for the record
	// meanwhile must not learn it from there either.
	failpoint.Hit(FailpointDestinationRestored)
	if err := a.advance(rec, migrate.PhaseReady); err != nil {
		return rec.Phase, err
	}
	return migrate.PhaseReady, nil
}

// MigrateCommit runs the restored container: the move is decided.
func (a *Agent) MigrateCommit(ctx context.Context, id string) (migrate.Phase, error) {
	rec, unlock, err := a.migration(id, migrate.RoleDestination, false)
	if err != nil {
		return "", err
	}
	defer unlock()
	if rec.Phase == migrate.PhaseDone {
		return rec.Phase, nil
	}
	if err := a.checkFence("commit a migration", rec.Container); err != nil {
		return rec.Phase, err
	}
	if err := a.commitGeneration(rec.Container, commandGeneration(ctx)); err != nil {
		return rec.Phase, err
	}
	if err := a.pagesCommittable(id); err != nil { // migration_postcopy.go
		return rec.Phase, err
	}
	if err := a.advance(rec, migrate.PhaseCommitted); err != nil {
		return rec.Phase, err
	}
	if err := a.resumeHeld(ctx, rec.Container); err != nil {
		return rec.Phase, err
	}
	if err := a.advance(rec, migrate.PhaseDone); err != nil {
		return rec.Phase, err
	}
	// The container runs: what the move leaves behind (the checkpoint,
	// hundreds of MiB to GiB) is removed after the reply, so that the
	// driver, and the source's release of the packets it held, do not
	// wait for it.
	go a.dropCommitted(context.WithoutCancel(ctx), id, rec.Container)
	return migrate.PhaseDone, nil
}

// dropCommitted removes what committed migration id left on the
// destination, under the migration's lock. What it cannot remove is
// logged: it only takes disk space.
func (a *Agent) dropCommitted(ctx context.Context, id, container string) {
	_, unlock, err := a.migration(id, migrate.RoleDestination, false)
	if err != nil {
		a.log.Warn("clean up after the migration", "migration", id, "err", err)
		return
	}
	defer unlock()
	if err := os.RemoveAll(a.checkpointDir(id)); err != nil {
		a.log.Warn("remove the migration's checkpoint", "migration", id, "err", err)
	}
	a.dropReceived(id) // migration_transfer.go
	a.dropPreDumps(id)
	a.dropRootfs(ctx, id, container, false) // migration_rootfs.go
}

// resumeHeld runs a container restored held stopped, and drops the CRIU
// configuration that held it (CRIU would apply it to the next dump too).
func (a *Agent) resumeHeld(ctx context.Context, ref string) error {
	e, err := a.lookup(ref)
	if err != nil {
		return err
	}
	e.op.Lock()
	defer e.op.Unlock()
	c := e.c
	if c.State == StateRunning {
		return nil
	}
	p := a.paths(c.ID)
	spec, err := runtime.ReadBundle(p.bundle())
	if err != nil {
		return err
	}
	runtime.SetCRIUConfig(spec, "")
	if err := runtime.WriteBundle(p.bundle(), spec); err != nil {
		return err
	}
	// runc keeps the annotation it restored with and hands CRIU the file
	// it names on every later dump; without the file CRIU reads none.
	if err := os.Remove(p.criuConfig()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := a.net.Route(ctx, c.ID); err != nil {
		return fmt.Errorf("container %s: route its address here: %w", c.Name, err)
	}
	if err := a.runc.Resume(ctx, c.ID); err != nil {
		return fmt.Errorf("container %s: resume: %w", c.Name, err)
	}
	if err := c.transition(StateRunning); err != nil {
		return err
	}
	a.log.Info("container resumed", "container", c.Name, "id", c.ID)
	return a.save(c)
}

// MigrateAbort discards what the destination holds for migration id (the
// held container, its network, the checkpoint) and acknowledges; a commit
// for id is refused afterwards.
func (a *Agent) MigrateAbort(ctx context.Context, id, why string) (migrate.Phase, error) {
	rec, unlock, err := a.migration(id, migrate.RoleDestination, true)
	if err != nil {
		return "", err
	}
	defer unlock()
	if rec.Phase == migrate.PhaseAborted {
		return rec.Phase, nil
	}
	// Committed: rec.Abort refuses below, with the sentinel the driver
	// knows. Otherwise a stale abort must not drop a held copy the
	// cluster committed meanwhile.
	if rec.Phase != migrate.PhaseCommitted && rec.Phase != migrate.PhaseDone && rec.ContainerID != "" {
		if err := a.fenceID("abort a migration", rec.Container, rec.ContainerID, commandGeneration(ctx)); err != nil {
			return rec.Phase, err
		}
	}
	if _, err := rec.Abort(why, time.Now()); err != nil {
		return rec.Phase, migrationError(err)
	}
	if rec.Container != "" {
		if e, err := a.lookup(rec.Container); err == nil && e.c.State == StateMigrating {
			// The held copy's sockets are the source's too: killed with its
			// network up, its kernel would close them towards the peers
			// (a FIN or a reset from the container's address), and the
			// source's copy, which runs on, would find its connections
			// gone. Cut its network first.
			if ep, err := a.net.Lookup(e.c.ID); err == nil {
				if err := fence(ctx, ep.NetnsPath); err != nil {
					return rec.Phase, err
				}
			}
			if err := a.Remove(ctx, rec.Container, true); err != nil {
				return rec.Phase, err
			}
		}
	}
	if err := os.RemoveAll(a.checkpointDir(id)); err != nil {
		return rec.Phase, err
	}
	a.dropPreDumps(id)
	a.dropRootfs(ctx, id, rec.Container, true) // migration_rootfs.go
	a.dropPreparedNetwork(ctx, id, rec.ContainerID)
	a.dropReceived(id) // migration_transfer.go
	a.dropPages(id)    // migration_stream.go
	a.releaseMemory(id)
	a.log.Warn("migration aborted", "migration", id, "container", rec.Container, "why", why)
	return rec.Phase, a.mig.journal.Put(rec)
}
