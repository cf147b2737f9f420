package migrate

import (
	"context"
	"fmt"
)

// The stream and post-copy strategies: memory pages that travel on a data
// connection of their own, beside CRIU, instead of inside the checkpoint.
//
// Stream: in the dump phase the destination runs a CRIU page server
// (ReceivePages) while the source dumps into it (Dump with Pages), so the
// pages never touch the source's disk; the rest of the checkpoint is sent
// as for stop-copy.
//
// Post-copy: the source dumps everything but the memory and keeps serving
// the pages (Dump); in the restore phase the destination restores at once
// and fetches the pages from the source (Restore with Pages) while the
// source takes its connection (ServePages). The pages keep flowing after
// the commit, and the source's Finish waits for the last of them.

// dumpStream runs the destination's ReceivePages and the source's Dump
// together with one fresh token; when either fails, the other is
// cancelled, and the first failure is the dump's.
func (d *driver) dumpStream(ctx context.Context) error {
	token, err := d.opts.NewToken()
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	pages := DataLink{Address: d.dst.Address(), Token: token}
	return d.together(ctx,
		func(ctx context.Context) error {
			if err := d.dst.ReceivePages(ctx, d.rec.ID, token); err != nil {
				return fmt.Errorf("receive the memory pages on the destination: %w", err)
			}
			return nil
		},
		func(ctx context.Context) error {
			if err := d.src.Dump(ctx, d.rec.ID, DumpOptions{Strategy: d.rec.Strategy, Pages: pages}); err != nil {
				return fmt.Errorf("dump on the source into the destination's page server: %w", err)
			}
			return nil
		})
}

// restoreLazy has the destination restore with its memory left on the
// source (Restore with Pages) while the source takes the connection the
// pages travel on (ServePages). The restore decides: once it returns the
// source's wait is cancelled, since a restore repeated after it had
// succeeded connects to nothing. A ServePages that fails first cancels
// the restore and is the cause.
func (d *driver) restoreLazy(ctx context.Context) error {
	token, err := d.opts.NewToken()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	pages := DataLink{Address: d.src.Address(), Token: token}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- d.src.ServePages(ctx, d.rec.ID, token) }()
	restored := make(chan error, 1)
	go func() {
		restored <- d.call(ctx, func(ctx context.Context) error {
			return d.dst.Restore(ctx, d.rec.ID, RestoreOptions{Strategy: d.rec.Strategy, Pages: pages})
		})
	}()
	select {
	case err := <-served:
		if err != nil {
			cancel()
			<-restored
			return fmt.Errorf("serve the memory pages from the source: %w", err)
		}
		err = <-restored
		if err != nil {
			return fmt.Errorf("restore on the destination with its pages on the source: %w", err)
		}
		return nil
	case err := <-restored:
		cancel()
		if serr := <-served; serr != nil {
			d.log.Debug("the source's wait for the page connection ended", "err", serr)
		}
		if err != nil {
			return fmt.Errorf("restore on the destination with its pages on the source: %w", err)
		}
		return nil
	}
}

// together runs a and b, two halves of one exchange between the agents,
// concurrently; when either fails the other is cancelled, and the first
// failure is returned.
func (d *driver) together(ctx context.Context, a, b func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	for _, f := range []func(context.Context) error{a, b} {
		go func() { errs <- d.call(ctx, f) }()
	}
	var first error
	for range 2 {
		err := <-errs
		switch {
		case err == nil:
		case first == nil:
			first = err
			cancel()
		default:
			d.log.Debug("other side of the exchange stopped", "err", err)
		}
	}
	return first
}

// announceFinish tells the driver's user what the source's Finish waits
// for: after a post-copy commit, the pages the destination has not
// fetched yet.
func (d *driver) announceFinish() {
	if d.rec.Strategy == PostCopy {
		d.emit(Event{Phase: d.rec.Phase, Message: "the container runs on the destination; the source serves the rest of its memory and removes its copy once every page is fetched (losing either node before that loses the container)"})
	}
}
