package migrate

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// The root filesystem on the fake clock: the image layers and the
// writable layer's sync take these, before the freeze.
const (
	layersTook = 4 * time.Second
	syncTook   = 6 * time.Second
	layerBytes = 3 << 20
	syncBytes  = 5 << 20
)

// rootfsWorld is the root filesystem's part of the fake hosts.
type rootfsWorld struct {
	// missing are the layers the destination lacks until it receives
	// them; format is the sync format it picks ("": none).
	missing []string
	format  string
	// received are the layers the destination received; srcSynced says
	// the source keeps what it synced for the dump, dstSynced that the
	// destination holds the synced snapshot.
	received             []string
	srcSynced, dstSynced bool
	// recordMissing: the destination has every layer but not the image's
	// record, until it receives it.
	recordMissing bool
	// dumpedAfterSync says the dump came after the sync, so that the
	// checkpoint carries only the changes since.
	dumpedAfterSync bool
}

// rootfsPrepared is what the destination's Prepare answers.
func (w *world) rootfsPrepared() Prepared {
	w.mu.Lock()
	defer w.mu.Unlock()
	missing := w.rootfsMissing()
	return Prepared{MissingLayers: missing, MissingImage: len(missing) > 0 || w.rootfs.recordMissing, RootfsFormat: w.rootfs.format,
		TransferChecksums: w.checksums}
}

// rootfsMissing is the layers the destination still lacks; the caller
// holds w.mu.
func (w *world) rootfsMissing() []string {
	var missing []string
	for _, l := range w.rootfs.missing {
		if !slices.Contains(w.rootfs.received, l) {
			missing = append(missing, l)
		}
	}
	return missing
}

// meet waits at token's pipe for the other side; the sender then
// delivers.
func (w *world) meet(ctx context.Context, token string, sender bool) error {
	p := w.pipe(token)
	if sender {
		select {
		case <-p.connected:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(peerWait):
			return errors.New("the receiver never came")
		}
		return nil
	}
	p.once.Do(func() { close(p.connected) })
	select {
	case <-p.delivered:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(peerWait):
		return errors.New("the sender never delivered")
	}
}

func (s fakeSource) SendLayers(ctx context.Context, id string, layers []string, address, token string, progress func(done, total int64)) error {
	w := s.w
	if _, err := w.call(ctx, "src.SendLayers"); err != nil {
		return err
	}
	if want := w.rootfsPrepared().MissingLayers; !slices.Equal(layers, want) {
		w.t.Errorf("SendLayers(%v), want the layers the destination lacks %v", layers, want)
	}
	if err := w.meet(ctx, token, true); err != nil {
		return err
	}
	w.clock.advance(layersTook)
	progress(layerBytes/2, layerBytes)
	progress(layerBytes, layerBytes)
	close(w.pipe(token).delivered)
	return nil
}

func (s fakeSource) SyncRootfs(ctx context.Context, id, format, address, token string, progress func(done, total int64)) error {
	w := s.w
	if _, err := w.call(ctx, "src.SyncRootfs"); err != nil {
		return err
	}
	w.mu.Lock()
	running, want := w.srcRunning, w.rootfs.format
	w.mu.Unlock()
	if format != want || !running {
		w.t.Errorf("SyncRootfs(%q) with the container running %v: want format %q, while it runs", format, running, want)
	}
	if err := w.meet(ctx, token, true); err != nil {
		return err
	}
	w.clock.advance(syncTook)
	progress(syncBytes, 0)
	w.mu.Lock()
	w.rootfs.srcSynced = true
	w.mu.Unlock()
	close(w.pipe(token).delivered)
	return nil
}

func (d fakeDest) ReceiveLayers(ctx context.Context, id, token string) error {
	w := d.w
	if _, err := w.call(ctx, "dst.ReceiveLayers"); err != nil {
		return err
	}
	missing := w.rootfsPrepared().MissingLayers
	if err := w.meet(ctx, token, false); err != nil {
		return err
	}
	w.mu.Lock()
	w.rootfs.received = append(w.rootfs.received, missing...)
	w.rootfs.recordMissing = false
	w.mu.Unlock()
	return nil
}

func (d fakeDest) ReceiveRootfs(ctx context.Context, id, token string) error {
	w := d.w
	if _, err := w.call(ctx, "dst.ReceiveRootfs"); err != nil {
		return err
	}
	if err := w.meet(ctx, token, false); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.rootfsMissing()) > 0 {
		w.t.Errorf("the writable layer came before the image layers the destination lacked")
	}
	w.rootfs.dstSynced = true
	return nil
}

// rootfsWorldWith is a world whose destination lacks missing and syncs
// the writable layer in format.
func rootfsWorldWith(t *testing.T, format string, missing ...string) *world {
	w := newWorld(t)
	w.rootfs = rootfsWorld{missing: missing, format: format}
	w.onCall["src.Dump"] = func() {
		w.mu.Lock()
		w.rootfs.dumpedAfterSync = w.rootfs.srcSynced
		w.mu.Unlock()
	}
	return w
}

// canonicalRootfs orders each exchange's two concurrent calls, which may
// start in either order: the receiver first.
func canonicalRootfs(calls []string) []string {
	for i := 0; i+1 < len(calls); i++ {
		for _, pair := range [][2]string{{"src.SendLayers", "dst.ReceiveLayers"}, {"src.SyncRootfs", "dst.ReceiveRootfs"}} {
			if calls[i] == pair[0] && calls[i+1] == pair[1] {
				calls[i], calls[i+1] = calls[i+1], calls[i]
			}
		}
	}
	return calls
}

// TestRootfsBeforeTheFreeze: the destination lacks a layer and syncs the
// writable layer; the driver has the layers sent while preparing, then
// the writable layer in PhaseSync, both while the container runs, before
// the dump. Their bytes are in the statistics; their time is not in the
// downtime.
func TestRootfsBeforeTheFreeze(t *testing.T) {
	w := rootfsWorldWith(t, "tar", "sha256:top")
	c := &collected{}
	res, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, options(w, c))
	if err != nil {
		t.Fatalf("Drive: %v", err)
	}
	w.check()
	if got := w.running(); got != "destination" {
		t.Errorf("running copy: %s, want the destination's only", got)
	}
	wantCalls := []string{"src.Describe", "dst.Prepare", "dst.ReceiveLayers", "src.SendLayers", "dst.ReceiveRootfs", "src.SyncRootfs",
		"src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "src.Finish"}
	if got := canonicalRootfs(w.callList()); !slices.Equal(got, wantCalls) {
		t.Errorf("calls:\n got %v\nwant %v", got, wantCalls)
	}
	if !slices.Equal(w.rootfs.received, []string{"sha256:top"}) || !w.rootfs.dstSynced || !w.rootfs.dumpedAfterSync {
		t.Errorf("destination received layers %v, synced %v; dumped after the sync %v: want the layer, the sync, then the dump",
			w.rootfs.received, w.rootfs.dstSynced, w.rootfs.dumpedAfterSync)
	}
	wantPhases := []Phase{PhasePrepare, PhaseSync, PhaseDump, PhaseTransfer, PhaseRestore, PhaseReady, PhaseCommitted, PhaseDone}
	if got := c.phaseList(); !slices.Equal(got, wantPhases) {
		t.Errorf("records saved in phases %v, want %v", got, wantPhases)
	}
	if res.LayerBytes != layerBytes || res.SyncBytes != syncBytes || res.BytesSent != chunks*chunk {
		t.Errorf("bytes: layers %d, sync %d, checkpoint %d; want %d, %d, %d", res.LayerBytes, res.SyncBytes, res.BytesSent, layerBytes, syncBytes, chunks*chunk)
	}
	if want := dumpTook + chunks*chunkTook + restoreTook + commitTook; res.Downtime != want {
		t.Errorf("downtime %v, want %v: from the dump on, the layers and the sync before it", res.Downtime, want)
	}
	if got := res.Phases[PhasePrepare]; got != prepareTook+layersTook {
		t.Errorf("prepare took %v, want %v: the layers are sent while preparing", got, prepareTook+layersTook)
	}
	if got := res.Phases[PhaseSync]; got != syncTook {
		t.Errorf("sync took %v, want %v", got, syncTook)
	}
	// The progress shows both before the checkpoint.
	var sawLayers, sawSync bool
	for _, ev := range c.events {
		sawLayers = sawLayers || (ev.Phase == PhasePrepare && ev.BytesDone == layerBytes && ev.BytesTotal == layerBytes)
		sawSync = sawSync || (ev.Phase == PhaseSync && ev.BytesDone == syncBytes)
	}
	if !sawLayers || !sawSync {
		t.Errorf("events show the layers %v and the sync %v with their bytes: want both", sawLayers, sawSync)
	}
}

// TestRootfsImageRecordAlone: a destination that has every layer but not
// the image still gets the image's record from the source.
func TestRootfsImageRecordAlone(t *testing.T) {
	w := rootfsWorldWith(t, "")
	w.rootfs.recordMissing = true
	if _, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, options(w, &collected{})); err != nil {
		t.Fatalf("Drive: %v", err)
	}
	wantCalls := []string{"src.Describe", "dst.Prepare", "dst.ReceiveLayers", "src.SendLayers",
		"src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "src.Finish"}
	if got := canonicalRootfs(w.callList()); !slices.Equal(got, wantCalls) {
		t.Errorf("calls:\n got %v\nwant %v", got, wantCalls)
	}
	if w.rootfs.recordMissing {
		t.Errorf("the destination never got the image's record")
	}
}

// TestRootfsFailuresAbortBeforeTheFreeze: a layer or sync refused by the
// destination aborts the move before the container was frozen; the
// destination discards what it got and the source forgets its sync. The
// container runs on the source throughout.
func TestRootfsFailuresAbortBeforeTheFreeze(t *testing.T) {
	tests := []struct {
		name      string
		fault     string
		wantCalls []string
	}{
		{name: "a layer refused", fault: "dst.ReceiveLayers",
			wantCalls: []string{"src.Describe", "dst.Prepare", "dst.ReceiveLayers", "src.SendLayers", "dst.Abort"}},
		{name: "the sync refused", fault: "dst.ReceiveRootfs",
			wantCalls: []string{"src.Describe", "dst.Prepare", "dst.ReceiveLayers", "src.SendLayers", "dst.ReceiveRootfs", "src.SyncRootfs", "dst.Abort", "src.Resume"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := rootfsWorldWith(t, "btrfs", "sha256:top")
			w.faults[tt.fault] = fault{err: errBoom}
			res, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, options(w, &collected{}))
			if !errors.Is(err, errBoom) || errors.Is(err, ErrHeld) {
				t.Fatalf("Drive = %v, want an abort caused by the refusal", err)
			}
			w.check()
			if got := canonicalRootfs(w.callList()); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls:\n got %v\nwant %v", got, tt.wantCalls)
			}
			if res.Record.Phase != PhaseAborted || !res.Record.Started[PhaseDump].IsZero() {
				t.Errorf("record %+v, want aborted before any dump", res.Record)
			}
			if w.running() != "source" || w.dumps != 0 {
				t.Errorf("running copy %s after %d dumps, want the source never frozen", w.running(), w.dumps)
			}
			if w.rootfs.srcSynced {
				t.Errorf("the source still keeps the aborted sync")
			}
		})
	}
}

// TestRootfsResumeAndAbortInSync: a driver that stopped in PhaseSync is
// resumed by syncing again (the container still runs) and moving, or
// aborted by the destination discarding its sync and the source
// forgetting its own.
func TestRootfsResumeAndAbortInSync(t *testing.T) {
	inSync := func(t *testing.T) *Record {
		r := NewRecord("m1", StopCopy, t0)
		r.Container = "web"
		if _, err := r.Advance(PhaseSync, t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		return r
	}
	t.Run("resume", func(t *testing.T) {
		w := rootfsWorldWith(t, "tar", "sha256:top")
		w.rootfs.received = []string{"sha256:top"} // fetched before the driver stopped
		res, err := Resume(context.Background(), inSync(t), fakeSource{w}, fakeDest{w}, options(w, &collected{}))
		if err != nil {
			t.Fatalf("Resume: %v", err)
		}
		wantCalls := []string{"src.Describe", "dst.Prepare", "dst.ReceiveRootfs", "src.SyncRootfs",
			"src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "src.Finish"}
		if got := canonicalRootfs(w.callList()); !slices.Equal(got, wantCalls) {
			t.Errorf("calls:\n got %v\nwant %v", got, wantCalls)
		}
		if res.Record.Phase != PhaseDone || w.running() != "destination" || !w.rootfs.dumpedAfterSync {
			t.Errorf("record in %s, running %s, dumped after the sync %v: want done on the destination, synced first",
				res.Record.Phase, w.running(), w.rootfs.dumpedAfterSync)
		}
	})
	t.Run("abort", func(t *testing.T) {
		w := rootfsWorldWith(t, "tar")
		w.dstPrepared, w.rootfs.srcSynced, w.rootfs.dstSynced = true, true, true
		res, err := AbortMigration(context.Background(), inSync(t), fakeSource{w}, fakeDest{w}, options(w, &collected{}))
		if err != nil {
			t.Fatalf("AbortMigration: %v", err)
		}
		if got := w.callList(); !slices.Equal(got, []string{"dst.Abort", "src.Resume"}) {
			t.Errorf("calls %v, want the destination's abort, then the source forgetting its sync", got)
		}
		if res.Record.Phase != PhaseAborted || w.running() != "source" || w.rootfs.srcSynced {
			t.Errorf("record in %s, running %s, source keeps its sync %v", res.Record.Phase, w.running(), w.rootfs.srcSynced)
		}
	})
}
