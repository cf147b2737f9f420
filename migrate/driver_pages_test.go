package migrate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeSourceAddress is the fake source agent's address, where a
// post-copy destination fetches its pages.
const fakeSourceAddress = "10.1.0.1:7420"

// pagesWorld is what the hosts hold of memory pages that travel on their
// own connection: the stream dump's pages on the destination, the
// post-copy source serving them, and the tokens each side was given.
type pagesWorld struct {
	dstHasPages bool // stream: the destination holds the dump's pages
	served      bool // post-copy: the source serves the destination
	tokens      map[string]string
	// restoredWith is the Pages the destination's Restore was given.
	restoredWith DataLink
}

func (w *world) pagesToken(side, token string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pages.tokens == nil {
		w.pages.tokens = map[string]string{}
	}
	w.pages.tokens[side] = token
}

// streamPages is the source's stream dump sending its pages: it meets
// the destination's ReceivePages on the token's pipe. A source that
// dumped already sends nothing again.
func (w *world) streamPages(ctx context.Context, opts DumpOptions) (err error) {
	w.pagesToken("dump", opts.Pages.Token)
	w.mu.Lock()
	dumped := w.srcDumped
	w.mu.Unlock()
	if dumped {
		return nil
	}
	if opts.Pages.Address != fakeAddress {
		w.t.Errorf("stream dump to %q, want the destination's address %q", opts.Pages.Address, fakeAddress)
	}
	p := w.pipe(opts.Pages.Token)
	select {
	case <-p.connected:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(peerWait):
		return errors.New("the page server never came (was Dump cancelled when ReceivePages failed?)")
	}
	close(p.delivered)
	return nil
}

func (d fakeDest) ReceivePages(ctx context.Context, id, token string) (err error) {
	w := d.w
	defer w.end("dst.ReceivePages", &err)
	w.pagesToken("receive", token)
	if _, err := w.call(ctx, "dst.ReceivePages"); err != nil {
		return err
	}
	w.mu.Lock()
	has := w.pages.dstHasPages
	w.mu.Unlock()
	if has {
		return nil
	}
	p := w.pipe(token)
	p.once.Do(func() { close(p.connected) })
	select {
	case <-p.delivered:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(peerWait):
		return errors.New("the dump never sent its pages (was ReceivePages cancelled when Dump failed?)")
	}
	w.mu.Lock()
	w.pages.dstHasPages = true
	w.mu.Unlock()
	return nil
}

// restorePages is what Restore needs of the pages: a stream checkpoint is
// complete only with them, and a post-copy restore connects to the
// source's ServePages (unless it restored already: then it connects to
// nothing).
func (w *world) restorePages(ctx context.Context, opts RestoreOptions) (err error) {
	w.mu.Lock()
	restored, has := w.dstRestored, w.pages.dstHasPages
	w.pages.restoredWith = opts.Pages
	w.mu.Unlock()
	switch {
	case restored:
		return nil
	case opts.Strategy == Stream && !has:
		return errors.New("the checkpoint lacks the stream dump's pages")
	case opts.Strategy != PostCopy:
		return nil
	}
	w.pagesToken("restore", opts.Pages.Token)
	if opts.Pages.Address != fakeSourceAddress {
		w.t.Errorf("post-copy restore fetches pages from %q, want the source's address %q", opts.Pages.Address, fakeSourceAddress)
	}
	p := w.pipe(opts.Pages.Token)
	p.once.Do(func() { close(p.connected) })
	select {
	case <-p.delivered:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(peerWait):
		return errors.New("the source never took the page connection (was Restore cancelled when ServePages failed?)")
	}
}

func (s fakeSource) Address() string { return fakeSourceAddress }

func (s fakeSource) ServePages(ctx context.Context, id, token string) (err error) {
	w := s.w
	defer w.end("src.ServePages", &err)
	w.pagesToken("serve", token)
	if _, err := w.call(ctx, "src.ServePages"); err != nil {
		return err
	}
	w.mu.Lock()
	dumped := w.srcDumped
	w.mu.Unlock()
	if !dumped {
		return errors.New("nothing dumped to serve")
	}
	p := w.pipe(token)
	select {
	case <-p.connected:
	case <-ctx.Done():
		return ctx.Err()
	}
	close(p.delivered)
	w.mu.Lock()
	w.pages.served = true
	w.mu.Unlock()
	return nil
}

// pairs are the calls the driver makes together, in the order the tests
// expect them.
var pairs = [][2]string{{"dst.ReceivePages", "src.Dump"}, {"src.ServePages", "dst.Restore"}}

// pagesCalls is w's call list with each concurrent pair in one order.
func pagesCalls(w *world) []string {
	calls := w.callList()
	for i := 0; i+1 < len(calls); i++ {
		for _, p := range pairs {
			if calls[i] == p[1] && calls[i+1] == p[0] {
				calls[i], calls[i+1] = calls[i+1], calls[i]
			}
		}
	}
	return calls
}

func TestDriveStreamAndPostCopy(t *testing.T) {
	tests := []struct {
		strategy  Strategy
		wantCalls []string
		// tokens are the sides that must have got the same page token.
		tokens [2]string
	}{
		{
			strategy: Stream,
			wantCalls: []string{"src.Describe", "dst.Prepare", "dst.ReceivePages", "src.Dump", "dst.Receive", "src.Send",
				"dst.Restore", "dst.Commit", "src.Finish"},
			tokens: [2]string{"dump", "receive"},
		},
		{
			strategy: PostCopy,
			wantCalls: []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send",
				"src.ServePages", "dst.Restore", "dst.Commit", "src.Finish"},
			tokens: [2]string{"serve", "restore"},
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.strategy), func(t *testing.T) {
			w := newWorld(t)
			w.strategy = tt.strategy
			c := &collected{}
			m := Migration{ID: "m1", Container: "web", Strategy: tt.strategy}
			res, err := Drive(context.Background(), m, fakeSource{w}, fakeDest{w}, options(w, c))
			if err != nil {
				t.Fatalf("Drive: %v", err)
			}
			w.check()
			if got := w.running(); got != "destination" {
				t.Errorf("running copy: %s, want the destination's only", got)
			}
			if got := pagesCalls(w); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls:\n got %v\nwant %v", got, tt.wantCalls)
			}
			a, b := w.pages.tokens[tt.tokens[0]], w.pages.tokens[tt.tokens[1]]
			if a == "" || a != b {
				t.Errorf("page tokens: %s got %q, %s %q: want the same one", tt.tokens[0], a, tt.tokens[1], b)
			}
			if a == w.tokens["send"] {
				t.Errorf("the pages and the checkpoint share token %q: want one per connection", a)
			}
			if res.Record.Phase != PhaseDone || res.Strategy != tt.strategy {
				t.Errorf("record in %s with strategy %s, want %s, %s", res.Record.Phase, res.Strategy, PhaseDone, tt.strategy)
			}
			var announced bool
			for _, ev := range c.events {
				announced = announced || strings.Contains(ev.Message, "every page is fetched")
			}
			if announced != (tt.strategy == PostCopy) {
				t.Errorf("the driver said the source waits for the pages to be fetched: %v, want %v", announced, tt.strategy == PostCopy)
			}
		})
	}
}

func TestDrivePagesFailures(t *testing.T) {
	upToSend := []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send"}
	tests := []struct {
		name     string
		strategy Strategy
		faults   map[string]fault
		// cancelled is the side that must have ended cancelled.
		cancelled string
		wantCalls []string
	}{
		{
			name: "stream: the page server fails, the dump is cancelled, the source resumes", strategy: Stream,
			faults: map[string]fault{"dst.ReceivePages": {err: errBoom}}, cancelled: "src.Dump",
			wantCalls: []string{"src.Describe", "dst.Prepare", "dst.ReceivePages", "src.Dump", "dst.Abort", "src.Resume"},
		},
		{
			name: "stream: the dump fails, the page server is cancelled, the source resumes", strategy: Stream,
			faults: map[string]fault{"src.Dump": {err: errBoom}}, cancelled: "dst.ReceivePages",
			wantCalls: []string{"src.Describe", "dst.Prepare", "dst.ReceivePages", "src.Dump", "dst.Abort", "src.Resume"},
		},
		{
			name: "post-copy: the source cannot serve, the restore is cancelled, the source resumes", strategy: PostCopy,
			faults: map[string]fault{"src.ServePages": {err: errBoom}}, cancelled: "dst.Restore",
			wantCalls: append(slices.Clone(upToSend), "src.ServePages", "dst.Restore", "dst.Abort", "src.Resume"),
		},
		{
			name: "post-copy: the restore fails, the source stops waiting and resumes", strategy: PostCopy,
			faults: map[string]fault{"dst.Restore": {err: errBoom}}, cancelled: "src.ServePages",
			wantCalls: append(slices.Clone(upToSend), "src.ServePages", "dst.Restore", "dst.Abort", "src.Resume"),
		},
		{
			name: "post-copy: the commit is lost, the abort is acknowledged, the source resumes", strategy: PostCopy,
			faults:    map[string]fault{"dst.Commit": {err: errors.New("connection reset")}},
			wantCalls: append(slices.Clone(upToSend), "src.ServePages", "dst.Restore", "dst.Commit", "dst.Abort", "src.Resume"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			w.strategy = tt.strategy
			w.faults = tt.faults
			m := Migration{ID: "m1", Container: "web", Strategy: tt.strategy}
			res, err := Drive(context.Background(), m, fakeSource{w}, fakeDest{w}, options(w, &collected{}))
			if !errors.Is(err, errBoom) && tt.cancelled != "" {
				t.Fatalf("err = %v, want the failing side's %v", err, errBoom)
			}
			if err == nil {
				t.Fatal("Drive succeeded")
			}
			w.check()
			if got := pagesCalls(w); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls:\n got %v\nwant %v", got, tt.wantCalls)
			}
			if got := w.running(); got != "source" || res.Record.Phase != PhaseAborted || !w.dstAborted {
				t.Errorf("running: %s, record in %s, destination aborted %v; want source, %s, true", got, res.Record.Phase, w.dstAborted, PhaseAborted)
			}
			if tt.cancelled != "" {
				if got := w.ended[tt.cancelled]; !errors.Is(got, context.Canceled) {
					t.Errorf("%s ended with %v, want cancelled", tt.cancelled, got)
				}
			}
		})
	}
}

// TestResumePostCopyRestored: a driver that stopped after the destination
// restored repeats the restore, which connects to nothing; the source's
// wait for the page connection is then cancelled, not an error.
func TestResumePostCopyRestored(t *testing.T) {
	w := worldAt(t, PhaseRestore)
	w.strategy = PostCopy
	rec := recordIn(t, PhaseRestore)
	rec.Strategy = PostCopy
	res, err := Resume(context.Background(), rec, fakeSource{w}, fakeDest{w}, options(w, &collected{}))
	if err != nil {
		t.Fatalf("Resume: %v", err)
	}
	want := []string{"src.ServePages", "dst.Restore", "dst.Commit", "src.Finish"}
	if got := pagesCalls(w); !slices.Equal(got, want) {
		t.Errorf("calls:\n got %v\nwant %v", got, want)
	}
	if res.Record.Phase != PhaseDone || w.running() != "destination" || w.restores != 0 {
		t.Errorf("record in %s, running %s, %d more restores; want %s, destination, 0", res.Record.Phase, w.running(), w.restores, PhaseDone)
	}
	if got := w.ended["src.ServePages"]; !errors.Is(got, context.Canceled) {
		t.Errorf("ServePages ended with %v, want cancelled once the restore returned", got)
	}
}
