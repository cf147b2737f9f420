package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/internal/mountinfo"
	"github.com/godwit/godwit/internal/testutil"
	"github.com/godwit/godwit/migrate"
)

// writeDump writes a dump's files into dir with a manifest whose digests
// are pending, as a migration's source seals it.
func writeDump(t *testing.T, dir string) {
	t.Helper()
	for name, data := range map[string][]byte{
		bundle.SpecName:      []byte("{}\n"),
		"criu/inventory.img": []byte("inventory"),
		"criu/pages-1.img":   bytes.Repeat([]byte("page"), 300<<10),
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := &bundle.Manifest{
		ID:        "mig-1",
		Container: bundle.Container{Name: "w"},
		Image:     bundle.Image{Name: "img", Layers: []digest.Digest{digest.FromString("layer")}},
		Host:      bundle.HostInfo{Node: "a", CRIUVersion: "4.2.1", RuncVersion: "1.3.6", Kernel: "6.18"},
		Spec:      bundle.SpecName,
	}
	if err := bundle.WritePendingManifest(dir, m); err != nil {
		t.Fatal(err)
	}
}

// logBuffer collects an agent's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testAgent is an agent with only what a migration's transfer needs: a
// data dir and a run dir of its own, and a log. A tmpfs it mounts is
// unmounted when the test ends.
func testAgent(t *testing.T) (*Agent, *logBuffer) {
	t.Helper()
	root := t.TempDir()
	var log logBuffer
	a := &Agent{
		cfg: Config{Name: "t", DataDir: filepath.Join(root, "data"), RunDir: filepath.Join(root, "run")},
		log: slog.New(slog.NewTextHandler(&log, nil)),
	}
	if err := os.MkdirAll(a.cfg.checkpointsDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mounted, _ := isMountPoint(a.scratchRoot()); mounted {
			if err := unix.Unmount(a.scratchRoot(), unix.MNT_DETACH); err != nil {
				t.Errorf("unmount the agent's tmpfs: %v", err)
			}
		}
	})
	return a, &log
}

func sendTransfer(t *testing.T, dir string) []byte {
	return sendTransferWith(t, dir, "")
}

// sendTransferCRC32C sends as a source does to a destination that takes
// CRC-32C.
func sendTransferCRC32C(t *testing.T, dir string) []byte {
	return sendTransferWith(t, dir, bundle.ChecksumCRC32C)
}

func sendTransferWith(t *testing.T, dir string, c bundle.Checksum) []byte {
	var buf bytes.Buffer
	if err := bundle.Send(context.Background(), dir, &buf, bundle.SendOptions{Checksum: c}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sendArchive(t *testing.T, dir string) []byte {
	if _, err := bundle.Seal(dir); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundle.Export(context.Background(), dir, &buf, bundle.ExportOptions{Compression: bundle.NoCompression}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestReceiveCheckpointThenVerify: the destination takes a checkpoint in
// the transfer framing (into memory for stop-copy, else into the data
// dir) and, from a source that predates the framing, as an exported
// archive; the restore's check then passes on the intact checkpoint and
// refuses one changed since, with the receipt or without, and nothing of
// it is left once the migration ends. A transfer checksummed with
// CRC-32C arrives unsealed: without its receipt (used once, or lost with
// a restart) nothing restores it.
func TestReceiveCheckpointThenVerify(t *testing.T) {
	tests := []struct {
		name string
		send func(t *testing.T, dir string) []byte
		// strategy is the migration's: stop-copy receives a transfer
		// into memory.
		strategy migrate.Strategy
		inMemory bool
		unsealed bool
	}{
		{"transfer framing, stop-copy", sendTransfer, migrate.StopCopy, true, false},
		{"transfer framing, a strategy that adds to the checkpoint", sendTransfer, migrate.Stream, false, false},
		{"transfer framing with CRC-32C, stop-copy", sendTransferCRC32C, migrate.StopCopy, true, true},
		{"transfer framing with CRC-32C, stream", sendTransferCRC32C, migrate.Stream, false, true},
		{"exported archive", sendArchive, migrate.StopCopy, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.inMemory {
				testutil.RequireRoot(t) // mounts a tmpfs
			}
			src := filepath.Join(t.TempDir(), "src")
			writeDump(t, src)
			stream := tt.send(t, src)
			for _, damaged := range []bool{false, true} {
				a, _ := testAgent(t)
				rec := migrate.NewRecord("mig-1", tt.strategy, time.Now())
				dir := a.checkpointDir(rec.ID)
				if err := a.receiveCheckpoint(context.Background(), rec, dir, bytes.NewReader(stream)); err != nil {
					t.Fatalf("receiveCheckpoint: %v", err)
				}
				if a.mig.receipts[rec.ID] == nil {
					t.Fatal("no receipt kept for the restore")
				}
				checkPlace(t, a, dir, tt.inMemory)
				if damaged {
					time.Sleep(20 * time.Millisecond) // past a coarse clock tick (bundle.Receipt)
					f, err := os.OpenFile(filepath.Join(dir, "criu", "pages-1.img"), os.O_WRONLY, 0)
					if err != nil {
						t.Fatal(err)
					}
					_, err = f.WriteAt([]byte("X"), 1000)
					f.Close()
					if err != nil {
						t.Fatal(err)
					}
				}
				// The receipt is used once; a repeated restore verifies in
				// full, with the same verdict, or refuses an unsealed
				// checkpoint.
				for attempt := range 2 {
					m, err := a.verifyReceived(rec.ID, dir)
					switch {
					case tt.unsealed && attempt == 1:
						if !errors.Is(err, bundle.ErrUnsealed) {
							t.Errorf("verify of an unsealed checkpoint without its receipt: %v, want %v", err, bundle.ErrUnsealed)
						}
					case damaged && !errors.Is(err, bundle.ErrCorrupt):
						t.Errorf("attempt %d: verify of a checkpoint changed since it arrived: %v, want it refused as corrupt", attempt, err)
					case !damaged && (err != nil || m.DigestsPending != tt.unsealed):
						t.Errorf("attempt %d: verify of the intact checkpoint: %v (digests pending: %v)", attempt, err, m != nil && m.DigestsPending)
					}
				}
				if len(a.mig.receipts) != 0 {
					t.Errorf("receipts kept after the restore: %v", a.mig.receipts)
				}
				// As MigrateCommit and MigrateAbort end it.
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				a.dropReceived(rec.ID)
				if left, _ := os.ReadDir(a.scratchRoot()); len(left) != 0 {
					t.Errorf("the tmpfs keeps %v once the migration ended", left)
				}
			}
		})
	}
}

// checkPlace checks where a received checkpoint is: in memory, linked
// from its usual place, or in that place.
func checkPlace(t *testing.T, a *Agent, dir string, inMemory bool) {
	t.Helper()
	info, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(dir, bundle.CRIUDir), &st); err != nil {
		t.Fatal(err)
	}
	switch isLink := info.Mode()&os.ModeSymlink != 0; {
	case inMemory && (!isLink || st.Type != tmpfsMagic):
		t.Errorf("checkpoint in %s (a link: %v, filesystem type %#x), want it on the agent's tmpfs, linked from there", dir, isLink, st.Type)
	case !inMemory && isLink:
		t.Errorf("checkpoint linked from %s, want it in the data dir", dir)
	}
}

// TestReceiveCheckpointAgainReplacesALeftover: a transfer retried after
// one that left its link and files behind (an agent restarted) takes
// their place.
func TestReceiveCheckpointAgainReplacesALeftover(t *testing.T) {
	testutil.RequireRoot(t)
	a, _ := testAgent(t)
	rec := migrate.NewRecord("mig-1", migrate.StopCopy, time.Now())
	dir := a.checkpointDir(rec.ID)
	if err := a.mountScratch(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(a.scratchRoot(), "."+rec.ID+".importing-123"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(a.scratchRoot(), rec.ID), dir); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "src")
	writeDump(t, src)
	if err := a.receiveCheckpoint(context.Background(), rec, dir, bytes.NewReader(sendTransfer(t, src))); err != nil {
		t.Fatalf("receiveCheckpoint over a leftover: %v", err)
	}
	if _, err := a.verifyReceived(rec.ID, dir); err != nil {
		t.Errorf("verify: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(a.scratchRoot(), ".*")); len(left) != 0 {
		t.Errorf("the earlier transfer's staging is still there: %v", left)
	}
}

// TestScratchHasHugePages: the migrations' tmpfs is mounted with huge
// pages for large files where the kernel has them for tmpfs.
func TestScratchHasHugePages(t *testing.T) {
	testutil.RequireRoot(t)
	a, _ := testAgent(t)
	if err := a.mountScratch(); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.EvalSymlinks(a.scratchRoot())
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(mounts, func(m mountinfo.Mount) bool { return m.MountPoint == root })
	if i < 0 {
		t.Fatalf("%s is not mounted", root)
	}
	_, err = os.Stat("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
	hasTHP := err == nil
	if huge := strings.Contains(mounts[i].SuperOptions, "huge=within_size"); huge != hasTHP {
		t.Errorf("tmpfs options %q (kernel has huge tmpfs pages: %v), want huge=within_size exactly where the kernel has them",
			mounts[i].SuperOptions, hasTHP)
	}
}

// TestScratchFallsBack: a checkpoint goes to the data dir when the node's
// memory could not hold it twice, with why in the log, and when the data
// dir could not hold it, so that the tmpfs never lets a move through that
// the data dir would refuse.
func TestScratchFallsBack(t *testing.T) {
	a, log := testAgent(t)
	rec := migrate.NewRecord("mig-1", migrate.StopCopy, time.Now())
	// A node whose memory cannot hold a 1 MiB checkpoint twice with the
	// reserve, whatever this machine has.
	const small = 1 << 20
	memInfo = func() (avail, total int64, err error) { return small, 4 * small, nil }
	t.Cleanup(func() { memInfo = readMemInfo })
	var st unix.Statfs_t
	if err := unix.Statfs(a.cfg.checkpointsDir(), &st); err != nil {
		t.Fatal(err)
	}
	room := int64(st.Bavail) * st.Bsize
	if room < small {
		t.Fatalf("the test's data dir has room for %d bytes only", room)
	}
	tests := []struct {
		name    string
		size    int64
		wantLog string
	}{
		{"larger than the data dir's room", room + 1, ""},
		{"more than the memory holds twice", small, "too little memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := a.scratchFor(rec, tt.size); got != "" {
				t.Fatalf("a checkpoint of %d bytes goes to %q, want the data dir", tt.size, got)
			}
			if !strings.Contains(log.String(), tt.wantLog) {
				t.Errorf("log %q does not say %q", log.String(), tt.wantLog)
			}
			if mounted, _ := isMountPoint(a.scratchRoot()); mounted {
				t.Errorf("the agent mounted its tmpfs for a checkpoint that does not go there")
			}
		})
	}
}

func TestParseMemInfo(t *testing.T) {
	tests := []struct {
		name         string
		text         string
		avail, total int64
		wantErr      bool
	}{
		{"both", "MemTotal:       24683656 kB\nMemFree:        22000000 kB\nMemAvailable:   23623548 kB\n", 23623548 << 10, 24683656 << 10, false},
		{"no MemAvailable", "MemTotal:       24683656 kB\nMemFree:        22000000 kB\n", 0, 0, true},
		{"garbled", "MemTotal:       many kB\nMemAvailable:   1 kB\n", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			avail, total, err := parseMemInfo(bufio.NewScanner(strings.NewReader(tt.text)))
			if (err != nil) != tt.wantErr || avail != tt.avail || total != tt.total {
				t.Errorf("parseMemInfo = %d, %d, %v; want %d, %d, error %v", avail, total, err, tt.avail, tt.total, tt.wantErr)
			}
		})
	}
}

func TestReceiveCheckpointRefusesGarbage(t *testing.T) {
	a, _ := testAgent(t)
	rec := migrate.NewRecord("mig-1", migrate.StopCopy, time.Now())
	dir := a.checkpointDir(rec.ID)
	err := a.receiveCheckpoint(context.Background(), rec, dir, bytes.NewReader([]byte("GODWIT-SOMETHING-ELSE\n")))
	if !errors.Is(err, bundle.ErrCorrupt) {
		t.Fatalf("receiveCheckpoint of garbage: %v, want ErrCorrupt", err)
	}
	if left, _ := os.ReadDir(a.cfg.checkpointsDir()); len(left) != 0 || len(a.mig.receipts) != 0 {
		t.Errorf("a refused transfer left %v and receipts %v", left, a.mig.receipts)
	}
}

// TestSealForRestore: the source's dump, sealed without digests, becomes
// a checkpoint that restore's Verify accepts.
func TestSealForRestore(t *testing.T) {
	a, _ := testAgent(t)
	dir := a.checkpointDir("mig-1")
	writeDump(t, dir)
	if _, err := bundle.Verify(dir); !errors.Is(err, bundle.ErrUnsealed) {
		t.Fatalf("Verify of the dump before sealing: %v, want ErrUnsealed", err)
	}
	if err := a.sealForRestore("mig-1"); err != nil {
		t.Fatalf("sealForRestore: %v", err)
	}
	if _, err := bundle.Verify(dir); err != nil {
		t.Errorf("Verify after sealForRestore: %v", err)
	}
}
