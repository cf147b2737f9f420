package agent_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/godwit/godwit/agent/snapshot/snapshottest"
	"github.com/godwit/godwit/internal/testutil"
)

// dialWorkload connects from the test's own namespace to the workload in
// a container at ip, for a connection held across checkpoints.
func dialWorkload(t *testing.T, ip string) *testutil.WorkloadClient {
	t.Helper()
	var d net.Dialer
	return testutil.DialWorkload(t, d.DialContext, net.JoinHostPort(ip, strconv.Itoa(testutil.WorkloadPort)))
}

type checkpointJSON struct {
	ID        string `json:"id"`
	Container string `json:"container"`
	IP        string `json:"ip"`
	Stats     struct {
		FrozenTimeUs int64 `json:"frozen_time_us"`
		PagesWritten int64 `json:"pages_written"`
	} `json:"stats"`
	Processes []struct {
		Cmdline []string `json:"cmdline"`
		Sockets []struct {
			Protocol string `json:"protocol"`
			State    string `json:"state"`
		} `json:"sockets"`
	} `json:"processes"`
}

// TestCheckpointAndRestore checkpoints a running workload through the CLI
// and checks what an operator would: with --leave-running it keeps
// counting; restored, it continues from its count with the same memory,
// IP, files and TCP connection, three times in a row; exported on one
// agent, it is restored on another with its connection intact; a wrong key
// and a flipped byte are refused and restore nothing.
func TestCheckpointAndRestore(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "runc", "criu", "iptables")
	bin := testutil.Godwit(t)
	image := filepath.Join(t.TempDir(), "workload.tar")
	testutil.WorkloadTar(t, image)
	// Both nodes hand out the same range: a restored container keeps its
	// IP, which must be valid on the node it comes back on.
	const cidr = "10.251.9.0/24"
	// a uses overlay and b btrfs, so the move also crosses snapshotters:
	// an overlay diff is applied to a btrfs snapshot, and b's checkpoint
	// diffs a btrfs subvolume.
	a := &node{bin: bin, name: "ckpt-a", dataDir: t.TempDir(), addr: freeAddr(t), cidr: cidr}
	b := &node{bin: bin, name: "ckpt-b", dataDir: snapshottest.NewLoopBtrfs(t), addr: freeAddr(t), cidr: cidr}
	for _, n := range []*node{a, b} {
		startNode(t, n)
		t.Cleanup(func() {
			n.run("rm", "-f", "c1")
			n.kill()
		})
	}
	// b gets the image only once a restore without it has been refused.
	a.must(t, "image", "import", image, "--name", "workload")

	a.must(t, "run", "--name", "c1", "workload", "--", "/workload", "-mem", "32", "-file", "/started")
	c := a.inspect(t, "c1")
	client := dialWorkload(t, c.IP)
	if got := client.Ask("hello"); got != "hello" {
		t.Fatalf("echo = %q, want hello", got)
	}
	started := a.must(t, "exec", "c1", "--", "cat", "/started")
	a.must(t, "exec", "c1", "--", "sh", "-c", "echo written-before-checkpoint > /marker")

	t.Run("leave running", func(t *testing.T) {
		before := client.Count()
		out := a.must(t, "checkpoint", "c1", "--leave-running")
		if !strings.Contains(out, "checkpointed c1 on "+a.name) {
			t.Errorf("checkpoint printed %q, want the container named", out)
		}
		if st := a.inspect(t, "c1").State; st != "running" {
			t.Fatalf("after --leave-running, c1 is %s", st)
		}
		time.Sleep(300 * time.Millisecond)
		if after := client.Count(); after <= before {
			t.Errorf("count went from %d to %d: the container stopped counting", before, after)
		}
	})

	t.Run("restore three times in a row", func(t *testing.T) {
		for cycle := 1; cycle <= 3; cycle++ {
			before := client.Count()
			a.must(t, "checkpoint", "c1")
			if st := a.inspect(t, "c1").State; st != "checkpointed" {
				t.Fatalf("cycle %d: after checkpoint, c1 is %s", cycle, st)
			}
			a.must(t, "restore", "c1")
			restored := a.inspect(t, "c1")
			if restored.State != "running" || restored.IP != c.IP {
				t.Fatalf("cycle %d: restored c1 is %s with IP %s, want running with %s", cycle, restored.State, restored.IP, c.IP)
			}
			after := client.Count()
			// The counter is in memory: it resumes where the dump froze it
			// (a tick or two after `before`), never from zero.
			if after < before || after > before+50 {
				t.Errorf("cycle %d: count %d before the checkpoint, %d after the restore", cycle, before, after)
			}
			client.CheckMemory()
		}
	})

	var listed []checkpointJSON
	if err := json.Unmarshal([]byte(a.must(t, "checkpoint", "ls", "-o", "json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 4 || listed[0].Container != "c1" || listed[0].IP != c.IP {
		t.Errorf("checkpoint ls = %+v, want 4 checkpoints of c1 with IP %s", listed, c.IP)
	}

	dir := t.TempDir()
	key, otherKey := filepath.Join(dir, "key"), filepath.Join(dir, "other-key")
	a.must(t, "checkpoint", "keygen", key)
	a.must(t, "checkpoint", "keygen", otherKey)

	t.Run("move to another agent", func(t *testing.T) {
		archive := filepath.Join(dir, "c1.gwc")
		before := client.Count()
		a.must(t, "checkpoint", "c1", "--export", archive, "--encrypt-key", key)
		if st := a.inspect(t, "c1").State; st != "checkpointed" {
			t.Fatalf("after checkpoint --export, c1 on %s is %s", a.name, st)
		}
		if _, err := b.run("restore", "--from", archive, "--decrypt-key", otherKey); err == nil || !strings.Contains(err.Error(), "key") {
			t.Fatalf("restore with the wrong key: err = %v, want it refused naming the key", err)
		}
		_, err := b.run("restore", "--from", archive, "--decrypt-key", key)
		if err == nil || !strings.Contains(err.Error(), "image import") || !strings.Contains(err.Error(), "workload") {
			t.Fatalf("restore on a node without the image: err = %v, want it refused naming the image and how to import it", err)
		}
		if names := b.containerNames(t); len(names) != 0 {
			t.Fatalf("a refused restore left containers %v on %s", names, b.name)
		}
		b.must(t, "image", "import", image, "--name", "workload")
		b.must(t, "restore", "--from", archive, "--decrypt-key", key)
		moved := b.inspect(t, "c1")
		if moved.State != "running" || moved.IP != c.IP || moved.Node != b.name || moved.Snapshotter != "btrfs" {
			t.Fatalf("c1 on %s = %+v, want it running there with IP %s", b.name, moved, c.IP)
		}
		if after := client.Count(); after < before || after > before+50 {
			t.Errorf("count %d before the move, %d after", before, after)
		}
		client.CheckMemory()
		if got := client.Ask("still here"); got != "still here" {
			t.Errorf("echo after the move = %q", got)
		}
		if got := b.must(t, "exec", "c1", "--", "cat", "/marker"); strings.TrimSpace(got) != "written-before-checkpoint" {
			t.Errorf("/marker on %s = %q, want the file written on %s", b.name, got, a.name)
		}
		if got := b.must(t, "exec", "c1", "--", "cat", "/started"); got != started {
			t.Errorf("/started = %q, want %q", got, started)
		}
		// Exactly one copy runs: the source's is checkpointed, not running.
		if st := a.inspect(t, "c1").State; st == "running" {
			t.Errorf("c1 runs on both %s and %s", a.name, b.name)
		}

		var inspected checkpointJSON
		if err := json.Unmarshal([]byte(b.must(t, "checkpoint", "inspect", archive, "--decrypt-key", key, "-o", "json")), &inspected); err != nil {
			t.Fatal(err)
		}
		assertInspected(t, inspected, c.IP)
	})

	t.Run("tampered archive", func(t *testing.T) {
		archive := filepath.Join(dir, "plain.gwc")
		b.must(t, "checkpoint", "c1", "--leave-running", "--export", archive)
		tampered := filepath.Join(dir, "tampered.gwc")
		flipInMember(t, archive, tampered, "criu/pages-1.img")
		_, err := b.run("restore", "--from", tampered, "--name", "c9")
		if err == nil || !strings.Contains(err.Error(), "pages-1.img") || !strings.Contains(err.Error(), "sha256") {
			t.Fatalf("restore of a tampered archive: err = %v, want it refused naming the member and its digest", err)
		}
		if names := b.containerNames(t); len(names) != 1 {
			t.Errorf("after a refused restore %s has containers %v, want c1 only", b.name, names)
		}
		entries, _ := os.ReadDir(filepath.Join(b.dataDir, "checkpoints"))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("a refused restore left %s in the checkpoints dir", e.Name())
			}
		}
		// The untouched archive is fine, but its IP is c1's, which runs
		// here: a copy is refused, naming the address.
		_, err = b.run("restore", "--from", archive, "--name", "c9")
		if err == nil || !strings.Contains(err.Error(), c.IP) {
			t.Fatalf("restore of a copy whose IP is in use: err = %v, want it refused naming %s", err, c.IP)
		}
		if names := b.containerNames(t); len(names) != 1 {
			t.Errorf("after a refused restore %s has containers %v, want c1 only", b.name, names)
		}
		if got := client.Ask("after-tamper"); got != "after-tamper" {
			t.Errorf("c1 stopped answering: %q", got)
		}
	})
}

// containerNames lists the names of every container on n.
func (n *node) containerNames(t *testing.T) []string {
	t.Helper()
	var cs []containerJSON
	if err := json.Unmarshal([]byte(n.must(t, "ps", "-a", "-o", "json")), &cs); err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Name
	}
	return names
}

func assertInspected(t *testing.T, c checkpointJSON, ip string) {
	t.Helper()
	if c.IP != ip || c.Stats.FrozenTimeUs <= 0 || c.Stats.PagesWritten <= 0 {
		t.Errorf("inspect: ip %s, stats %+v; want ip %s and CRIU's dump statistics", c.IP, c.Stats, ip)
	}
	var sawWorkload, sawEstablished bool
	for _, p := range c.Processes {
		if len(p.Cmdline) > 0 && p.Cmdline[0] == "/workload" {
			sawWorkload = true
		}
		for _, s := range p.Sockets {
			if s.Protocol == "TCP" && s.State == "ESTABLISHED" {
				sawEstablished = true
			}
		}
	}
	if !sawWorkload || !sawEstablished {
		t.Errorf("inspect shows processes %+v; want /workload with an established TCP socket", c.Processes)
	}
}

// flipInMember re-packs the archive src into dst with one byte of member
// flipped, compressing it again so that only the digest can catch it.
func flipInMember(t *testing.T, src, dst, member string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var out bytes.Buffer
	zw, err := zstd.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	tr, tw := tar.NewReader(zr), tar.NewWriter(zw)
	flipped := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == member && len(data) > 0 {
			data[len(data)/2] ^= 0x01
			flipped = true
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if !flipped {
		t.Fatalf("archive %s has no member %s", src, member)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startSmallDiskNode starts an agent whose data dir is a tmpfs of size,
// with the workload image imported, for tests that fill its disk.
func startSmallDiskNode(t *testing.T, name, size, cidr string) *node {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "runc", "criu", "iptables")
	image := filepath.Join(t.TempDir(), "workload.tar")
	testutil.WorkloadTar(t, image)
	dataDir := t.TempDir()
	if err := syscall.Mount("tmpfs", dataDir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dataDir, syscall.MNT_DETACH) })
	n := &node{bin: testutil.Godwit(t), name: name, dataDir: dataDir, addr: freeAddr(t), cidr: cidr}
	startNode(t, n)
	t.Cleanup(func() {
		n.run("rm", "-f", "c1")
		n.kill()
	})
	n.must(t, "image", "import", image, "--name", "workload")
	return n
}

// TestCheckpointOnFullDiskKeepsContainerRunning fills the data dir during
// the dump: the checkpoint must fail saying why, and the container must
// run on, counting, with nothing left of the attempt.
func TestCheckpointOnFullDiskKeepsContainerRunning(t *testing.T) {
	// The image and the container's layer fit; 48 MiB of memory does not.
	n := startSmallDiskNode(t, "ckpt-full", "40m", "10.251.10.0/24")
	n.must(t, "run", "--name", "c1", "workload", "--", "/workload", "-mem", "48")
	client := dialWorkload(t, n.inspect(t, "c1").IP)
	before := client.Count()

	_, err := n.run("checkpoint", "c1")
	if err == nil || !strings.Contains(err.Error(), "No space left") {
		t.Fatalf("checkpoint on a full disk: err = %v, want it refused with CRIU's reason", err)
	}
	if st := n.inspect(t, "c1").State; st != "running" {
		t.Fatalf("after the failed checkpoint c1 is %s, want running", st)
	}
	time.Sleep(300 * time.Millisecond)
	if after := client.Count(); after <= before {
		t.Errorf("count %d before the failed checkpoint, %d after: the container stopped", before, after)
	}
	entries, err := os.ReadDir(filepath.Join(n.dataDir, "checkpoints"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("the failed checkpoint left %v behind", entries)
	}
}

// TestCheckpointFailingAfterTheDumpRestoresTheContainer fills the disk
// after CRIU has dumped (and killed) the container, while the rootfs diff
// is written: the agent must bring the container back from the dump it
// just made, memory, counter and TCP connection included, and say so.
func TestCheckpointFailingAfterTheDumpRestoresTheContainer(t *testing.T) {
	// About 10 MiB for the image, 30 MiB for the container's file and
	// 9 MiB for the dump fit; a second copy of the file in the rootfs
	// diff does not.
	n := startSmallDiskNode(t, "ckpt-rollback", "56m", "10.251.11.0/24")
	n.must(t, "run", "--name", "c1", "workload", "--", "/workload", "-mem", "8")
	n.must(t, "exec", "c1", "--", "dd", "if=/dev/zero", "of=/big", "bs=1M", "count=30")
	client := dialWorkload(t, n.inspect(t, "c1").IP)
	before := client.Count()

	_, err := n.run("checkpoint", "c1")
	if err == nil || !strings.Contains(err.Error(), "restored from the dump and runs") {
		t.Fatalf("checkpoint failing after the dump: err = %v, want it to say the container was restored from the dump", err)
	}
	if st := n.inspect(t, "c1").State; st != "running" {
		t.Fatalf("after the failed checkpoint c1 is %s, want running", st)
	}
	if after := client.Count(); after < before || after > before+50 {
		t.Errorf("count %d before the failed checkpoint, %d after: the container did not resume where it was", before, after)
	}
	client.CheckMemory()
	entries, err := os.ReadDir(filepath.Join(n.dataDir, "checkpoints"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("the failed checkpoint left %v behind", entries)
	}
}
