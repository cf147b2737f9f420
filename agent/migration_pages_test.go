package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/internal/netnsutil"
	"github.com/godwit/godwit/internal/testutil"
	"github.com/godwit/godwit/migrate"
)

// pagesTestAgent is an agent with a journal holding migration m1 on its
// destination side, enough for the page functions that need no runtime.
func pagesTestAgent(t *testing.T) *Agent {
	t.Helper()
	a := preCopyTestAgent(t)
	j, err := migrate.OpenJournal(a.migrationsDir())
	if err != nil {
		t.Fatal(err)
	}
	a.mig.journal, a.mig.locks = j, map[string]*sync.Mutex{}
	rec := migrate.NewRecord("m1", migrate.Stream, time.Now())
	rec.Role = migrate.RoleDestination
	if err := j.Put(rec); err != nil {
		t.Fatal(err)
	}
	return a
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCheckPageFiles(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{name: "pagemaps and pages", files: map[string]string{"pagemap-1.img": "m", "pages-65537.img": "p", "pagemap-42.img": "m"}},
		{name: "no pagemap", files: map[string]string{"pages-1.img": "p"}, wantErr: "no pagemap"},
		{name: "another image", files: map[string]string{"pagemap-1.img": "m", "core-1.img": "c"}, wantErr: "core-1.img is not a page image"},
		{name: "a name that only starts right", files: map[string]string{"pagemap-1.img.sh": "x"}, wantErr: "not a page image"},
		{name: "empty", files: map[string]string{}, wantErr: "no pagemap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			err := checkPageFiles(dir)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("checkPageFiles: %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// streamCheckpoint writes migration m1's checkpoint as a stream's
// source sends it (no page) on a's side, with the transfer's receipt
// unless noReceipt.
func streamCheckpoint(t *testing.T, a *Agent, noReceipt bool) string {
	t.Helper()
	dir := a.checkpointDir("m1")
	writeFiles(t, filepath.Join(dir, bundle.CRIUDir), map[string]string{"core-1.img": "core", "pstree.img": "tree"})
	writeFiles(t, dir, map[string]string{bundle.SpecName: "{}"})
	m := &bundle.Manifest{ID: "m1", Container: bundle.Container{Name: "web"}, Image: bundle.Image{Name: "busybox"},
		Host: bundle.HostInfo{Node: "a", Kernel: "6.18.44", CRIUVersion: "4.2.1", RuncVersion: "1.3.6"}, Spec: bundle.SpecName}
	receipt, err := bundle.WriteManifestWithReceipt(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	if !noReceipt {
		a.mig.receipts = map[string]*bundle.Receipt{"m1": receipt}
	}
	return dir
}

// TestCompleteStream: the pages a stream dump sent join the checkpoint
// that came without them, admitted by the transfer's receipt, so that
// this agent's restore takes them without a pass over them and nothing
// else does; a repeated call changes nothing.
func TestCompleteStream(t *testing.T) {
	a := pagesTestAgent(t)
	dir := streamCheckpoint(t, a, false)
	writeFiles(t, a.streamPagesDir("m1"), map[string]string{"pagemap-1.img": "map", "pages-65537.img": "memory"})

	for i := range 2 {
		if err := a.completeStream("m1"); err != nil {
			t.Fatalf("completeStream (call %d): %v", i+1, err)
		}
	}
	for _, name := range []string{"pagemap-1.img", "pages-65537.img"} {
		if _, err := os.Stat(filepath.Join(dir, bundle.CRIUDir, name)); err != nil {
			t.Errorf("the checkpoint lacks the streamed %s: %v", name, err)
		}
	}
	if _, err := os.Stat(a.streamPagesDir("m1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the received pages' directory is still there: %v", err)
	}
	// Nothing but the receipt vouches for the pages.
	if _, err := bundle.Verify(dir); !errors.Is(err, bundle.ErrCorrupt) {
		t.Errorf("Verify without the receipt: %v, want %v (the pages are not listed)", err, bundle.ErrCorrupt)
	}
	// A page changed on disk is caught by the restore's check.
	time.Sleep(20 * time.Millisecond) // past a coarse clock tick
	if err := os.WriteFile(filepath.Join(dir, bundle.CRIUDir, "pages-65537.img"), []byte("MEMORY"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.verifyReceived("m1", dir); !errors.Is(err, bundle.ErrCorrupt) {
		t.Errorf("the restore's check of a changed page: %v, want %v", err, bundle.ErrCorrupt)
	}
}

// TestCompleteStreamIsCheckedByTheRestore: the restore's check of a
// completed stream checkpoint passes, and returns the manifest the source
// sent.
func TestCompleteStreamIsCheckedByTheRestore(t *testing.T) {
	a := pagesTestAgent(t)
	dir := streamCheckpoint(t, a, false)
	writeFiles(t, a.streamPagesDir("m1"), map[string]string{"pagemap-1.img": "map", "pages-65537.img": "memory"})
	if err := a.completeStream("m1"); err != nil {
		t.Fatal(err)
	}
	m, err := a.verifyReceived("m1", dir)
	if err != nil {
		t.Fatalf("the restore's check: %v", err)
	}
	if m.ID != "m1" || len(m.Files) != 3 {
		t.Errorf("manifest %+v, want m1's as sent, with its 3 files", m)
	}
}

func TestCompleteStreamRefuses(t *testing.T) {
	tests := []struct {
		name      string
		pages     map[string]string // nil: no pages received
		noReceipt bool
		wantErr   error
	}{
		{name: "no pages received", wantErr: ErrInvalidState},
		{name: "a page file the checkpoint has already", pages: map[string]string{"core-1.img": "x"}, wantErr: ErrInvalid},
		{name: "no receipt (the agent restarted)", pages: map[string]string{"pagemap-1.img": "map"}, noReceipt: true, wantErr: ErrInvalidState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := pagesTestAgent(t)
			streamCheckpoint(t, a, tt.noReceipt)
			if tt.pages != nil {
				writeFiles(t, a.streamPagesDir("m1"), tt.pages)
			}
			if err := a.completeStream("m1"); !errors.Is(err, tt.wantErr) {
				t.Errorf("completeStream: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestHeldCRIUConfig(t *testing.T) {
	a := pagesTestAgent(t)
	if got := a.heldCRIUConfig("m1"); !got.LeaveStopped || got.LazyPages || got.WorkDir != "" {
		t.Errorf("held restore of a migration without lazy pages: %+v, want leave-stopped only", got)
	}
	st := a.pages()
	st.fetching["m1"] = &lazyFetch{workDir: "/data/migrations/m1.pages/lazy"}
	got := a.heldCRIUConfig("m1")
	if !got.LeaveStopped || !got.LazyPages || got.WorkDir != "/data/migrations/m1.pages/lazy" {
		t.Errorf("held restore of a post-copy migration: %+v, want leave-stopped, lazy pages in the daemon's work dir", got)
	}
	if other := a.heldCRIUConfig("m2"); other.LazyPages {
		t.Errorf("another migration's restore is lazy too: %+v", other)
	}
}

// TestLinkedImagesOutliveTheCheckpoint: the lazy-pages daemon's links to
// the images (bundle.Receipt.Link) survive the checkpoint's removal.
func TestLinkedImagesOutliveTheCheckpoint(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "images")
	writeFiles(t, src, map[string]string{"pagemap-1.img": "map", "pstree.img": "tree"})
	if err := (*bundle.Receipt)(nil).Link(src, "", dst); err != nil {
		t.Fatal(err)
	}
	// The checkpoint goes at the commit; the daemon's links stay.
	if err := os.RemoveAll(src); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"pagemap-1.img": "map", "pstree.img": "tree"} {
		if got, err := os.ReadFile(filepath.Join(dst, name)); err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
}

// TestFence: a fenced namespace passes nothing but loopback traffic, a
// second fence adds nothing, and unfence opens it again. The namespace is
// reached through a veth from a peer namespace, both the test's own.
func TestFence(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "iptables")
	dir := t.TempDir()
	fenced, peer := filepath.Join(dir, "fence-test-a"), filepath.Join(dir, "fence-test-b")
	for _, p := range []string{fenced, peer} {
		if err := netnsutil.Create(p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { netnsutil.Remove(p) })
		if err := loopbackUp(p); err != nil {
			t.Fatal(err)
		}
	}
	const fencedAddr, peerAddr = "169.254.77.1", "169.254.77.2"
	vethBetween(t, fenced, peer, fencedAddr, peerAddr)
	var l net.Listener
	if err := inNetnsPath(fenced, func() (err error) {
		l, err = net.Listen("tcp", fencedAddr+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	reaches := func() bool {
		t.Helper()
		return inNetnsPath(peer, func() error {
			c, err := net.DialTimeout("tcp", l.Addr().String(), 300*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	}
	rules := func() int {
		t.Helper()
		var out []byte
		if err := inNetnsPath(fenced, func() (err error) {
			out, err = exec.Command("iptables", "-w", "-S").CombinedOutput()
			return err
		}); err != nil {
			t.Fatalf("iptables -S: %v: %s", err, out)
		}
		return strings.Count(string(out), fenceComment)
	}
	// The veth's carrier comes up a moment after its ends.
	for deadline := time.Now().Add(5 * time.Second); !reaches(); {
		if time.Now().After(deadline) {
			t.Fatal("the peer cannot reach the namespace before any fence")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx := context.Background()
	for range 2 {
		if err := fence(ctx, fenced); err != nil {
			t.Fatalf("fence: %v", err)
		}
	}
	if got := rules(); got != len(fenceRules) {
		t.Errorf("%d fence rules after fencing twice, want %d", got, len(fenceRules))
	}
	if reaches() {
		t.Error("the peer reaches the fenced namespace")
	}
	// Loopback still works: the container's own loopback connections.
	if err := inNetnsPath(fenced, func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:1", time.Second)
		if err == nil {
			c.Close()
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil // refused, not dropped: loopback answers
		}
		return err
	}); err != nil {
		t.Errorf("loopback inside the fence: %v", err)
	}
	if err := unfence(ctx, fenced); err != nil {
		t.Fatalf("unfence: %v", err)
	}
	if got := rules(); got != 0 {
		t.Errorf("%d fence rules after unfencing, want none", got)
	}
	if !reaches() {
		t.Error("the peer cannot reach the namespace after unfence")
	}
	if err := unfence(ctx, fenced); err != nil {
		t.Errorf("unfence of an unfenced namespace: %v", err)
	}
}

// vethBetween joins the namespaces pinned at a and b with a veth pair,
// addressed aAddr and bAddr (/30).
func vethBetween(t *testing.T, a, b, aAddr, bAddr string) {
	t.Helper()
	nsA, err := netns.GetFromPath(a)
	if err != nil {
		t.Fatal(err)
	}
	defer nsA.Close()
	nsB, err := netns.GetFromPath(b)
	if err != nil {
		t.Fatal(err)
	}
	defer nsB.Close()
	hb, err := netnsutil.NetlinkHandle(nsB)
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	if err := hb.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "fb"}, PeerName: "fa"}); err != nil {
		t.Fatal(err)
	}
	fa, err := hb.LinkByName("fa")
	if err != nil {
		t.Fatal(err)
	}
	if err := hb.LinkSetNsFd(fa, int(nsA)); err != nil {
		t.Fatal(err)
	}
	ha, err := netnsutil.NetlinkHandle(nsA)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	for _, side := range []struct {
		h    *netlink.Handle
		name string
		addr string
	}{{ha, "fa", aAddr}, {hb, "fb", bAddr}} {
		link, err := side.h.LinkByName(side.name)
		if err != nil {
			t.Fatal(err)
		}
		addr, err := netlink.ParseAddr(side.addr + "/30")
		if err != nil {
			t.Fatal(err)
		}
		if err := side.h.AddrAdd(link, addr); err != nil {
			t.Fatal(err)
		}
		if err := side.h.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
	}
}
