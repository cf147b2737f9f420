package clustertests

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/agent/archive"
	"github.com/godwit/godwit/agent/snapshot/snapshottest"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/devcluster/devclustertest"
	"github.com/godwit/godwit/internal/failpoint"
	"github.com/godwit/godwit/internal/testutil"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// writerScript runs in the container beside the workload: it writes,
// rewrites, deletes and replaces files under /data every 50 ms, right up
// to the freeze.
const writerScript = `mkdir -p /data/dir
i=0
while :; do
  i=$((i + 1))
  echo $i > /data/counter
  echo "line $i" >> /data/log
  echo $i > /data/f$((i % 5))
  rm -f /data/f$(((i + 2) % 5))
  case $((i % 10)) in 0) rm -rf /data/dir; mkdir /data/dir; echo $i > /data/dir/n;; esac
  busybox ln -sfn f$((i % 5)) /data/link
  sleep 0.05
done`

// bigFileSize is a file written long before the move: the sync carries
// it, the checkpoint must not.
const bigFileSize = 32 << 20

// startRootfsCluster is startMoveCluster with the workload's image on
// host a only, and the container writing files (writerScript) besides
// serving the workload.
func startRootfsCluster(t *testing.T, name string, n int, aOpts devcluster.AgentOptions, dataFS string) *moveCluster {
	t.Helper()
	testutil.RequireTools(t, "criu", "iptables")
	c := devclustertest.Start(t, devcluster.Config{Name: name, Subnet: netip.MustParsePrefix(fmt.Sprintf("10.77.%d.0/24", n)),
		ContainerCIDR: netip.MustParsePrefix(fmt.Sprintf("10.78.%d.0/24", n))}, "a", "b", "c")
	m := &moveCluster{c: c, a: c.Host("a"), b: c.Host("b")}
	if dataFS != "" {
		mountDataDirs(t, dataFS, m.a, m.b)
	}
	if _, err := m.a.StartAgent(context.Background(), aOpts); err != nil {
		t.Fatal(err)
	}
	if _, err := m.b.StartAgent(context.Background(), devcluster.AgentOptions{}); err != nil {
		t.Fatal(err)
	}
	importWorkload(t, m.a.Agent())
	ip, err := c.ContainerIP()
	if err != nil {
		t.Fatal(err)
	}
	m.ip = ip
	if _, err := m.a.Agent().Client().RunContainer(context.Background(), &pb.RunContainerRequest{
		Name: "w", Image: workloadImage, Ip: ip.String(),
		Args: []string{"/bin/sh", "-c", "(" + writerScript + ") & exec " + testutil.WorkloadPath},
	}); err != nil {
		t.Fatal(err)
	}
	m.route(t, m.a)
	m.client = dialFrom(t, c.Host("c"), ip)
	return m
}

// dataFSSize is the loop filesystem under each agent's data dir when a
// test asks for one (sparse: it takes what is written).
const dataFSSize = 1 << 30

// mountDataDirs puts each host's data dir on a loop filesystem of type
// fstype, before its agent starts, so that the agent's snapshotter is that
// filesystem's (btrfs: subvolumes and send/receive). The containers are
// removed and the agents stopped before the filesystems are unmounted,
// which the cluster's own teardown would do only after.
func mountDataDirs(t *testing.T, fstype string, hosts ...*devcluster.Host) {
	t.Helper()
	for _, h := range hosts {
		if err := os.MkdirAll(h.DataDir(), 0o700); err != nil {
			t.Fatal(err)
		}
		snapshottest.MountLoopFilesystem(t, fstype, fstype+"-progs", dataFSSize, h.DataDir())
	}
	t.Cleanup(func() { // runs before the unmounts
		for _, h := range hosts {
			if a := h.Agent(); a != nil && a.Running() {
				_, _ = a.Client().RemoveContainer(context.Background(), &pb.RemoveContainerRequest{Ref: "w", Force: true})
				if err := a.Stop(); err != nil {
					t.Errorf("stop the agent of %s: %v", h.Name(), err)
				}
			}
		}
	})
}

// rootfsOf is where host h mounts the root filesystem of container w.
func rootfsOf(t *testing.T, h *devcluster.Host) string {
	t.Helper()
	c, err := h.Agent().Client().InspectContainer(context.Background(), &pb.ContainerRef{Ref: "w"})
	if err != nil {
		t.Fatalf("inspect w on %s: %v", h.Name(), err)
	}
	return filepath.Join(h.DataDir(), "containers", c.GetId(), "bundle", "rootfs")
}

// workloadImageOn returns host h's image of the workload, nil if none.
func workloadImageOn(t *testing.T, h *devcluster.Host) *pb.Image {
	t.Helper()
	list, err := h.Agent().Client().ListImages(context.Background(), &pb.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range list.GetImages() {
		if img.GetName() == workloadImage {
			return img
		}
	}
	return nil
}

// TestRootfsMovesWithTheContainer moves a container whose image only the
// source has, while it writes files, with files written into its root
// filesystem from the host before the move and right up to the freeze:
// the destination fetches the image's layers (and records the image as
// the source has it), the writable layer is synced while the container
// runs and only what changed after goes with the checkpoint, and the
// destination's tree is the source's byte for byte when it holds the
// restored container, before it runs.
func TestRootfsMovesWithTheContainer(t *testing.T) {
	for _, tt := range []struct {
		name, cluster string
		n             int
		dataFS        string // the agents' data dirs' filesystem; "": the host's
	}{
		{name: "overlay", cluster: "ctroot", n: 30},
		{name: "btrfs to btrfs", cluster: "ctrootb", n: 33, dataFS: "btrfs"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := startRootfsCluster(t, tt.cluster, tt.n, devcluster.AgentOptions{}, tt.dataFS)
			if tt.dataFS != "" {
				for _, h := range []*devcluster.Host{m.a, m.b} {
					info, err := h.Agent().Client().NodeInfo(context.Background(), &pb.NodeInfoRequest{})
					if err != nil || info.GetSnapshotter() != tt.dataFS {
						t.Fatalf("agent of %s: snapshotter %q (%v), want %s on its %s data dir", h.Name(), info.GetSnapshotter(), err, tt.dataFS, tt.dataFS)
					}
				}
			}
			moveRootfs(t, m)
		})
	}
}

// moveRootfs is TestRootfsMovesWithTheContainer on the cluster m: both
// agents on btrfs sync the writable layer with btrfs send and receive
// (an incremental send at the freeze), the others with the tar.
func moveRootfs(t *testing.T, m *moveCluster) {
	if img := workloadImageOn(t, m.b); img != nil {
		t.Fatalf("host b has the image %s already: the test needs it on the source only", img.GetId())
	}
	srcRootfs := rootfsOf(t, m.a)

	// From the host, before the move: a big file, an odd mode, a
	// symlink, a directory to replace later, an image file deleted.
	hostDir := filepath.Join(srcRootfs, "host")
	mustMkdir(t, filepath.Join(hostDir, "tree", "sub"))
	big := make([]byte, bigFileSize)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(hostDir, "big"), big, 0o644)
	mustWrite(t, filepath.Join(hostDir, "secret"), []byte("mode 600\n"), 0o600)
	mustWrite(t, filepath.Join(hostDir, "tree", "sub", "old"), []byte("old\n"), 0o644)
	mustWrite(t, filepath.Join(hostDir, "same-size"), []byte("AAAA"), 0o644)
	mustWrite(t, filepath.Join(hostDir, "doomed"), []byte("deleted after the sync\n"), 0o644)
	must(t, os.Symlink("secret", filepath.Join(hostDir, "link")))
	must(t, os.Remove(filepath.Join(srcRootfs, "bin", "yes")))
	// The container writes on; the big file ages past the racy window.
	time.Sleep(archive.RacyWindow + time.Second)

	var before int
	var atReady struct{ src, dst map[string]snapshottest.Node }
	var sawSync bool
	opts := migrate.DriveOptions{OnEvent: func(ev migrate.Event) {
		switch {
		case ev.Phase == migrate.PhaseSync:
			sawSync = true
		case ev.Phase == migrate.PhaseDump && ev.BytesDone == 0 && strings.HasPrefix(ev.Message, "freezing"):
			// After the sync, right before the freeze: change every
			// kind of thing again.
			before = m.client.Count()
			mustWrite(t, filepath.Join(hostDir, "same-size"), []byte("BBBB"), 0o644)
			mustWrite(t, filepath.Join(hostDir, "late"), []byte("written at the freeze\n"), 0o640)
			must(t, os.Remove(filepath.Join(hostDir, "doomed")))
			must(t, os.Chmod(filepath.Join(hostDir, "secret"), 0o400))
			must(t, os.RemoveAll(filepath.Join(hostDir, "tree")))
			mustMkdir(t, filepath.Join(hostDir, "tree"))
			mustWrite(t, filepath.Join(hostDir, "tree", "new"), []byte("new\n"), 0o644)
			must(t, os.Remove(filepath.Join(srcRootfs, "bin", "seq")))
		case ev.Phase == migrate.PhaseReady && atReady.src == nil:
			// Both copies are stopped: the source dumped, the
			// destination holds its restored copy.
			if !snapshottest.Mounted(t, srcRootfs) {
				t.Errorf("the source's root filesystem is not mounted at %s after the dump", srcRootfs)
				return
			}
			atReady.src = snapshottest.ReadTree(t, srcRootfs)
			atReady.dst = snapshottest.ReadTree(t, rootfsOf(t, m.b))
		}
	}}
	res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-rootfs", Container: "w", Strategy: migrate.StopCopy},
		migrationAgent(m.a), migrationAgent(m.b), opts)
	if err != nil {
		t.Fatalf("move: %v", err)
	}
	if !sawSync || res.Phases[migrate.PhaseSync] == 0 {
		t.Errorf("the move had no sync phase (phases %v)", res.Phases)
	}

	// The destination fetched the image from the source.
	srcImg, dstImg := workloadImageOn(t, m.a), workloadImageOn(t, m.b)
	if dstImg == nil || dstImg.GetId() != srcImg.GetId() || len(dstImg.GetLayers()) != len(srcImg.GetLayers()) {
		t.Errorf("image on the destination %v, want the source's %v", dstImg, srcImg)
	}
	if res.LayerBytes == 0 || res.SyncBytes < bigFileSize {
		t.Errorf("sent %d bytes of layers and %d of sync: want the layers, and the writable layer with its %d-byte file", res.LayerBytes, res.SyncBytes, bigFileSize)
	}
	if res.BytesSent >= bigFileSize {
		t.Errorf("the checkpoint was %d bytes: it carried the file synced before the freeze (%d bytes)", res.BytesSent, bigFileSize)
	}

	// Byte for byte, as each host saw it with both copies stopped.
	if atReady.src == nil {
		t.Fatal("no look at both trees while both copies were stopped")
	}
	if d := snapshottest.TreeDiff(atReady.dst, atReady.src); d != "" {
		t.Errorf("the destination's root filesystem differs from the source's:\n%s", d)
	}
	for p, want := range map[string]string{"host/same-size": "BBBB", "host/late": "written at the freeze\n", "host/tree/new": "new\n"} {
		if got := atReady.dst[p]; got.Content != want {
			t.Errorf("%s on the destination = %q, want %q (written right before the freeze)", p, got.Content, want)
		}
	}
	for _, gone := range []string{"host/doomed", "host/tree/sub/old", "bin/yes", "bin/seq"} {
		if _, ok := atReady.dst[gone]; ok {
			t.Errorf("%s, deleted on the source, is on the destination", gone)
		}
	}
	if _, ok := atReady.dst["data/counter"]; !ok {
		t.Errorf("the container's own files are not on the destination")
	}

	m.route(t, m.b)
	assertOneCopy(t, "w", m.b, []*devcluster.Host{m.a, m.b})
	m.assertWentOn(t, before)
	// The writer runs on: its counter file moves on from the frozen one.
	time.Sleep(300 * time.Millisecond)
	dst := rootfsOf(t, m.b)
	if now, err := os.ReadFile(filepath.Join(dst, "data", "counter")); err != nil || string(now) == atReady.src["data/counter"].Content {
		t.Errorf("the writer's counter on the destination is %q (%v), frozen at %q: it did not go on", now, err, atReady.src["data/counter"].Content)
	}
}

// TestRootfsTamperedLayerIsRefused has the source send a layer whose
// content is not its digest (a failpoint): the destination refuses it
// naming the layer, records no image, and the move aborts before the
// freeze; the container runs on on the source.
func TestRootfsTamperedLayerIsRefused(t *testing.T) {
	m := startRootfsCluster(t, "ctrtamp", 31, devcluster.AgentOptions{
		Env: []string{failpoint.Arm(agent.FailpointSourceTamperLayer, failpoint.ActionCorrupt)},
	}, "")
	img := workloadImageOn(t, m.a)
	before := m.client.Count()
	res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-tampered", Container: "w", Strategy: migrate.StopCopy},
		migrationAgent(m.a), migrationAgent(m.b), quickAbort)
	if err == nil || errors.Is(err, migrate.ErrHeld) {
		t.Fatalf("move with a tampered layer: err = %v, want a clean abort", err)
	}
	named := false
	for _, l := range img.GetLayers() {
		named = named || strings.Contains(err.Error(), l.GetDigest())
	}
	if !named || !strings.Contains(err.Error(), "refused") {
		t.Errorf("error %q does not refuse the layer by its digest", err)
	}
	if res.Record.Phase != migrate.PhaseAborted || !res.Record.Started[migrate.PhaseDump].IsZero() {
		t.Errorf("record %+v, want aborted before any freeze", res.Record)
	}
	if got := workloadImageOn(t, m.b); got != nil {
		t.Errorf("the destination recorded the image %s from a tampered transfer", got.GetId())
	}
	assertOneCopy(t, "w", m.a, []*devcluster.Host{m.a, m.b})
	time.Sleep(300 * time.Millisecond)
	if after := m.client.Count(); after <= before {
		t.Errorf("count %d before the refused move, %d after: the container stopped", before, after)
	}
}

// TestRootfsAbortDiscardsTheSync damages the checkpoint on its way (a
// failpoint) after the destination fetched the image and received the
// synced writable layer: the move aborts, the destination removes the
// synced snapshot and the image it fetched, the source forgets its mark,
// and the container runs on on the source.
func TestRootfsAbortDiscardsTheSync(t *testing.T) {
	m := startRootfsCluster(t, "ctrabort", 32, devcluster.AgentOptions{
		Env: []string{failpoint.Arm(agent.FailpointSourceCorruptSend, failpoint.ActionCorrupt)},
	}, "")
	time.Sleep(300 * time.Millisecond) // let the writer write
	res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-rootfs-abort", Container: "w", Strategy: migrate.StopCopy},
		migrationAgent(m.a), migrationAgent(m.b), quickAbort)
	if err == nil || errors.Is(err, migrate.ErrHeld) {
		t.Fatalf("move with a damaged checkpoint: err = %v, want a clean abort", err)
	}
	if res.Record.Phase != migrate.PhaseAborted || res.SyncBytes == 0 || res.LayerBytes == 0 {
		t.Fatalf("record in %s after %d bytes of layers and %d of sync: want aborted after both", res.Record.Phase, res.LayerBytes, res.SyncBytes)
	}
	if keys := snapshotKeys(t, m.b); len(keys) != 0 {
		t.Errorf("the destination keeps snapshots %v after the abort, want none (no layer, no synced layer)", keys)
	}
	if img := workloadImageOn(t, m.b); img != nil {
		t.Errorf("the destination keeps the image %s it fetched for the aborted move", img.GetId())
	}
	marks, err := filepath.Glob(filepath.Join(m.a.DataDir(), "snapshots", "snapshots", "*", "marks", "*"))
	if err != nil || len(marks) != 0 {
		t.Errorf("the source keeps the sync's marks %v (%v)", marks, err)
	}
	assertOneCopy(t, "w", m.a, []*devcluster.Host{m.a, m.b})
	before := m.client.Count()
	time.Sleep(300 * time.Millisecond)
	if after := m.client.Count(); after <= before {
		t.Errorf("count %d, then %d: the container does not run on the source", before, after)
	}
}

// snapshotKeys lists the snapshots host h's agent records.
func snapshotKeys(t *testing.T, h *devcluster.Host) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.DataDir(), "snapshots", "metadata.json"))
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		Snapshots map[string]json.RawMessage `json:"snapshots"`
	}
	if err := json.Unmarshal(data, &md); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range md.Snapshots {
		keys = append(keys, k)
	}
	return keys
}

func mustWrite(t *testing.T, name string, data []byte, mode os.FileMode) {
	t.Helper()
	must(t, os.WriteFile(name, data, mode))
	must(t, os.Chmod(name, mode))
}

func mustMkdir(t *testing.T, name string) {
	t.Helper()
	must(t, os.MkdirAll(name, 0o755))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
