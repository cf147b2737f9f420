package clustertests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/agent/snapshot/snapshottest"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/devcluster/devclustertest"
	"github.com/godwit/godwit/internal/failpoint"
	"github.com/godwit/godwit/internal/testutil"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// This test's ranges, apart from every other test's.
var (
	migrateSubnet     = netip.MustParsePrefix("10.77.2.0/24")
	migrateContainers = netip.MustParsePrefix("10.78.2.0/24")
)

const workloadImage = "workload"

// TestStopCopyThereAndBack moves a workload from host a to host b and back
// with stop-copy while a client on host c keeps one TCP connection open
// (answered first through the source's forward, then on the moved route):
// after each move the counter went on from where it was, the memory is the
// same bytes, the connection still answers, and exactly one copy runs, as
// runc on each host sees it.
func TestStopCopyThereAndBack(t *testing.T) {
	m := startMoveCluster(t, "ctm", 2, devcluster.AgentOptions{}, devcluster.AgentOptions{})
	hosts := []*devcluster.Host{m.a, m.b}
	assertOneCopy(t, "w", m.a, hosts)
	for i, hop := range []struct{ from, to *devcluster.Host }{{m.a, m.b}, {m.b, m.a}} {
		before := m.client.Count()
		res, err := migrate.Drive(context.Background(), migrate.Migration{
			ID: fmt.Sprintf("m-there-and-back-%d", i), Container: "w", Strategy: migrate.StopCopy,
		}, migrationAgent(hop.from), migrationAgent(hop.to), migrate.DriveOptions{})
		if err != nil {
			t.Fatalf("move %s -> %s: %v", hop.from.Name(), hop.to.Name(), err)
		}
		// The cluster still routes the IP via the source, which forwards
		// it to the destination: the client is answered all the same.
		assertOneCopy(t, "w", hop.to, hosts)
		m.assertWentOn(t, before)
		m.route(t, hop.to)
		if got := m.client.Ask("still-here"); got != "still-here" {
			t.Errorf("echo after the move = %q", got)
		}
		t.Logf("move %s -> %s: downtime %s, total %s", hop.from.Name(), hop.to.Name(), res.Downtime, res.Total)
	}
}

// moveCluster is three hosts, agents on a and b, and a workload "w"
// running on a with a cluster IP routed via a, a client on host c
// connected to it.
type moveCluster struct {
	c      *devcluster.Cluster
	a, b   *devcluster.Host
	ip     netip.Addr
	client *testutil.WorkloadClient
}

// startMoveCluster sets up a moveCluster named name on the test ranges
// 10.77.N.0/24 (hosts) and 10.78.N.0/24 (containers); aOpts and bOpts
// start the agents (failpoints go there), prepareB runs before b's agent
// starts.
func startMoveCluster(t *testing.T, name string, n int, aOpts, bOpts devcluster.AgentOptions, prepareB ...func(*devcluster.Host)) *moveCluster {
	t.Helper()
	testutil.RequireTools(t, "criu", "iptables")
	c := devclustertest.Start(t, devcluster.Config{Name: name, Subnet: netip.MustParsePrefix(fmt.Sprintf("10.77.%d.0/24", n)),
		ContainerCIDR: netip.MustParsePrefix(fmt.Sprintf("10.78.%d.0/24", n))}, "a", "b", "c")
	m := &moveCluster{c: c, a: c.Host("a"), b: c.Host("b")}
	for _, prepare := range prepareB {
		prepare(m.b)
	}
	if _, err := m.a.StartAgent(context.Background(), aOpts); err != nil {
		t.Fatal(err)
	}
	if _, err := m.b.StartAgent(context.Background(), bOpts); err != nil {
		t.Fatal(err)
	}
	importWorkload(t, m.a.Agent(), m.b.Agent())
	ip, err := c.ContainerIP()
	if err != nil {
		t.Fatal(err)
	}
	m.ip = ip
	if _, err := m.a.Agent().Client().RunContainer(context.Background(), &pb.RunContainerRequest{
		Name: "w", Image: workloadImage, Args: []string{testutil.WorkloadPath, "-mem", "16"}, Ip: ip.String(),
	}); err != nil {
		t.Fatal(err)
	}
	m.route(t, m.a)
	m.client = dialFrom(t, c.Host("c"), ip)
	return m
}

// route routes the workload's IP via host h, as the cluster would after a
// move.
func (m *moveCluster) route(t *testing.T, h *devcluster.Host) {
	t.Helper()
	if err := m.c.Route(context.Background(), netip.PrefixFrom(m.ip, 32), h); err != nil {
		t.Fatal(err)
	}
}

// restartAgent brings host h's agent back, without failpoints.
func restartAgent(t *testing.T, h *devcluster.Host) {
	t.Helper()
	h.Agent().Kill() // dead already, or killed now; reaped either way
	if _, err := h.StartAgent(context.Background(), devcluster.AgentOptions{}); err != nil {
		t.Fatal(err)
	}
}

// assertWentOn checks, on the client's connection, that the workload's
// counter went on from before (never back, never restarted) and its memory
// is the same bytes.
func (m *moveCluster) assertWentOn(t *testing.T, before int) {
	t.Helper()
	after := m.client.Count()
	if after < before || after > before+100 {
		t.Errorf("count %d before, %d after: the workload did not go on from where it was", before, after)
	}
	m.client.CheckMemory()
}

// quickAbort keeps a held move's tests short: few, fast retries.
var quickAbort = migrate.DriveOptions{AbortTimeout: 3 * time.Second, AbortAttempts: 2, AbortBackoff: 100 * time.Millisecond}

func migrationAgent(h *devcluster.Host) *agentclient.MigrationAgent {
	return &agentclient.MigrationAgent{Client: h.Agent().Client(), Addr: h.Agent().Addr()}
}

func importWorkload(t *testing.T, agents ...*devcluster.Agent) {
	t.Helper()
	tarball := filepath.Join(t.TempDir(), "workload.tar")
	testutil.WorkloadTar(t, tarball)
	for _, a := range agents {
		f, err := os.Open(tarball)
		if err != nil {
			t.Fatal(err)
		}
		_, err = agentclient.ImportImage(context.Background(), a.Client(), f, workloadImage, 0)
		f.Close()
		if err != nil {
			t.Fatalf("import the workload into %s: %v", a, err)
		}
	}
}

// assertOneCopy checks, with runc on every host, that exactly one of them
// runs the container, and that it is on host want: godwit's own records
// are not asked.
func assertOneCopy(t *testing.T, name string, want *devcluster.Host, hosts []*devcluster.Host) {
	t.Helper()
	if running := runningOn(t, name, hosts); len(running) != 1 || running[0] != want.Name() {
		t.Fatalf("container %s runs on hosts %v, want exactly on %s", name, running, want.Name())
	}
}

// procState is the state letter (R, S, T, ...) of process pid.
func procState(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatalf("read the state of pid %d: %v", pid, err)
	}
	// The command name may hold spaces; the state follows its ")".
	return strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))[0]
}

// runningOn lists the hosts whose runc reports the container running,
// its processes not stopped.
func runningOn(t *testing.T, name string, hosts []*devcluster.Host) []string {
	t.Helper()
	var running []string
	for _, h := range hosts {
		root := filepath.Join(h.DataDir(), "run", "runc")
		if _, err := os.Stat(root); os.IsNotExist(err) {
			continue // runc never ran a container on this host
		}
		out, err := exec.Command("runc", "--root", root, "list", "--format", "json").Output()
		if err != nil {
			t.Fatalf("runc list on host %s: %v", h.Name(), err)
		}
		var states []struct {
			Status      string            `json:"status"`
			Pid         int               `json:"pid"`
			Annotations map[string]string `json:"annotations"`
		}
		if err := json.Unmarshal(out, &states); err != nil && len(strings.TrimSpace(string(out))) > 0 && string(out) != "null\n" {
			t.Fatalf("runc list on host %s: %v: %q", h.Name(), err, out)
		}
		for _, s := range states {
			// A copy restored held stopped is "running" to runc, but its
			// processes are stopped: it does not run. Nor does one whose
			// processes a tracer holds (a post-copy source's, while CRIU
			// serves its pages: strategies_test.go), nor one killed and
			// not reaped yet.
			if s.Annotations["org.godwit.name"] == name && s.Status == "running" && !stoppedOrDying(procState(t, s.Pid)) {
				running = append(running, h.Name())
			}
		}
	}
	return running
}

// dialFrom connects from host h to the workload at ip, for a connection
// held across every move.
func dialFrom(t *testing.T, h *devcluster.Host, ip netip.Addr) *testutil.WorkloadClient {
	t.Helper()
	return testutil.DialWorkload(t, h.Dial, net.JoinHostPort(ip.String(), strconv.Itoa(testutil.WorkloadPort)))
}

// TestMoveRefusedBeforeTheDumpLeavesTheSourceRunning asks to move a
// container to a host whose image of the same name has other layers (a
// host without the image fetches it: rootfs_test.go): the destination
// refuses in prepare, before anything is frozen, so the container never
// stops and nothing is left on the destination.
func TestMoveRefusedBeforeTheDumpLeavesTheSourceRunning(t *testing.T) {
	tests := []struct {
		name, cluster string
		n             int
		// spoil makes host b unable to take the workload.
		spoil   func(t *testing.T, m *moveCluster)
		wantErr string
	}{
		{name: "another image of the same name", cluster: "ctr", n: 3, wantErr: "other layers",
			spoil: func(t *testing.T, m *moveCluster) {
				if _, err := m.b.Agent().Client().RemoveImage(context.Background(), &pb.RemoveImageRequest{Ref: workloadImage}); err != nil {
					t.Fatal(err)
				}
				other := filepath.Join(t.TempDir(), "busybox.tar")
				testutil.BusyboxTar(t, other)
				f, err := os.Open(other)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := agentclient.ImportImage(context.Background(), m.b.Agent().Client(), f, workloadImage, 0); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "its address taken", cluster: "cti", n: 10, wantErr: "address in use",
			spoil: func(t *testing.T, m *moveCluster) {
				if _, err := m.b.Agent().Client().RunContainer(context.Background(), &pb.RunContainerRequest{
					Name: "squatter", Image: workloadImage, Args: []string{testutil.WorkloadPath}, Ip: m.ip.String(),
				}); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := startMoveCluster(t, tt.cluster, tt.n, devcluster.AgentOptions{}, devcluster.AgentOptions{})
			tt.spoil(t, m)
			before := m.client.Count()

			res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-refused", Container: "w", Strategy: migrate.StopCopy},
				migrationAgent(m.a), migrationAgent(m.b), migrate.DriveOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it refused with %q", err, tt.wantErr)
			}
			if res != nil && !res.Record.Started[migrate.PhaseDump].IsZero() {
				t.Errorf("the container was dumped although the destination had refused: %+v", res.Record)
			}
			assertOneCopy(t, "w", m.a, []*devcluster.Host{m.a, m.b})
			time.Sleep(300 * time.Millisecond)
			if after := m.client.Count(); after <= before {
				t.Errorf("count %d before the refused move, %d after: the container stopped", before, after)
			}
		})
	}
}

// TestMoveFailingAfterTheDumpResumesTheSource makes the destination's
// restore fail after the container was frozen and sent (its IP is taken
// there): the driver aborts, the destination discards its copy and
// acknowledges, and only then does the source run its own copy again,
// from where it was, with the client's connection intact.
func TestMoveFailingAfterTheDumpResumesTheSource(t *testing.T) {
	m := startMoveCluster(t, "cta", 4, devcluster.AgentOptions{},
		devcluster.AgentOptions{Env: []string{failpoint.Arm(agent.FailpointDestinationRestore, failpoint.ActionFail)}})
	before := m.client.Count()

	res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-aborted", Container: "w", Strategy: migrate.StopCopy},
		migrationAgent(m.a), migrationAgent(m.b), migrate.DriveOptions{})
	if err == nil || errors.Is(err, migrate.ErrHeld) {
		t.Fatalf("move whose restore fails: err = %v, want a clean abort", err)
	}
	if res == nil || res.Record.Phase != migrate.PhaseAborted || res.Record.Started[migrate.PhaseDump].IsZero() {
		t.Fatalf("record = %+v, want aborted after the dump", res)
	}
	assertOneCopy(t, "w", m.a, []*devcluster.Host{m.a, m.b})
	m.assertWentOn(t, before)
	// The destination made the container's network before the freeze:
	// the abort removed it.
	if left, _ := os.ReadDir(filepath.Join(m.b.DataDir(), "run", "netns")); len(left) > 0 {
		t.Errorf("the destination kept network namespaces after the abort: %v", left)
	}
	t.Logf("aborted after the dump: downtime %s", res.Downtime)
}

// TestSourceKilledAfterTheDumpIsHeldUntilAborted kills the source agent
// right after it dumped the container (a failpoint): the destination
// acknowledges the abort, but nobody may run the source's copy while its
// agent is down, so the move is held, with no copy running anywhere. Once
// the source's agent is back, `--abort` (AbortMigration) runs the
// container on the source again from where it was, the client still
// connected.
func TestSourceKilledAfterTheDumpIsHeldUntilAborted(t *testing.T) {
	for _, tt := range []struct {
		strategy migrate.Strategy
		cluster  string
		n        int
	}{
		{migrate.StopCopy, "ctk", 5}, // the source's copy is its checkpoint
		{migrate.Stream, "ctks", 12}, // the source's copy is the frozen, fenced container
	} {
		t.Run(string(tt.strategy), func(t *testing.T) {
			m := startMoveCluster(t, tt.cluster, tt.n, devcluster.AgentOptions{
				Env: []string{failpoint.Arm(agent.FailpointSourceAfterDump, failpoint.ActionKill)},
			}, devcluster.AgentOptions{})
			before := m.client.Count()
			res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-killed", Container: "w", Strategy: tt.strategy},
				migrationAgent(m.a), migrationAgent(m.b), quickAbort)
			if !errors.Is(err, migrate.ErrHeld) {
				t.Fatalf("move whose source died after the dump: err = %v, want it held", err)
			}
			assertNoCopy(t, "w", []*devcluster.Host{m.a, m.b})

			restartAgent(t, m.a) // the operator then aborts the move
			if _, err := migrate.AbortMigration(context.Background(), res.Record, migrationAgent(m.a), migrationAgent(m.b), quickAbort); err != nil {
				t.Fatalf("abort of the held move: %v", err)
			}
			assertOneCopy(t, "w", m.a, []*devcluster.Host{m.a, m.b})
			m.assertWentOn(t, before)
		})
	}
}

// TestDestinationKilledAtTheTransferIsHeldUntilAborted kills the
// destination agent as the checkpoint reaches it: nobody can acknowledge
// an abort, so the source keeps its stopped copy; once the destination's
// agent is back, the abort is acknowledged and the source runs again.
func TestDestinationKilledAtTheTransferIsHeldUntilAborted(t *testing.T) {
	m := startMoveCluster(t, "ctx", 7, devcluster.AgentOptions{}, devcluster.AgentOptions{
		Env: []string{failpoint.Arm(agent.FailpointDestinationReceive, failpoint.ActionKill)},
	})
	before := m.client.Count()
	res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-dst-killed", Container: "w", Strategy: migrate.StopCopy},
		migrationAgent(m.a), migrationAgent(m.b), quickAbort)
	if !errors.Is(err, migrate.ErrHeld) {
		t.Fatalf("move whose destination died in the transfer: err = %v, want it held", err)
	}
	assertNoCopy(t, "w", []*devcluster.Host{m.a, m.b})

	restartAgent(t, m.b)
	if _, err := migrate.AbortMigration(context.Background(), res.Record, migrationAgent(m.a), migrationAgent(m.b), quickAbort); err != nil {
		t.Fatalf("abort of the held move: %v", err)
	}
	assertOneCopy(t, "w", m.a, []*devcluster.Host{m.a, m.b})
	m.assertWentOn(t, before)
}

// TestCorruptTransferIsRefusedAndTheSourceResumes flips one bit of the
// checkpoint on its way (a failpoint on the source): the destination's
// digest check refuses it, the move aborts, and the source runs on from
// where it was.
func TestCorruptTransferIsRefusedAndTheSourceResumes(t *testing.T) {
	m := startMoveCluster(t, "ctc", 8, devcluster.AgentOptions{
		Env: []string{failpoint.Arm(agent.FailpointSourceCorruptSend, failpoint.ActionCorrupt)},
	}, devcluster.AgentOptions{})
	before := m.client.Count()
	res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-corrupt", Container: "w", Strategy: migrate.StopCopy},
		migrationAgent(m.a), migrationAgent(m.b), quickAbort)
	if err == nil || errors.Is(err, migrate.ErrHeld) || !strings.Contains(err.Error(), "crc32c mismatch") {
		t.Fatalf("move with a corrupt transfer: err = %v, want a clean abort naming the CRC-32C check", err)
	}
	if res.Record.Phase != migrate.PhaseAborted {
		t.Errorf("record ends in %s, want aborted", res.Record.Phase)
	}
	assertOneCopy(t, "w", m.a, []*devcluster.Host{m.a, m.b})
	m.assertWentOn(t, before)
}

// assertNoCopy checks with runc on every host that none runs the
// container: a held move.
func assertNoCopy(t *testing.T, name string, hosts []*devcluster.Host) {
	t.Helper()
	if running := runningOn(t, name, hosts); len(running) != 0 {
		t.Fatalf("container %s runs on hosts %v while the move is held, want on none", name, running)
	}
}

// TestDriverKilledAfterTheRestoreIsResumed kills the driver, the real
// `godwit migrate` process, right after the destination restored the
// container held stopped (a failpoint): no copy runs, the source keeps its
// stopped copy, and `godwit migrate --resume ID` from the journal commits
// the move: the container runs on the destination from where it was.
func TestDriverKilledAfterTheRestoreIsResumed(t *testing.T) {
	m := startMoveCluster(t, "ctd", 6, devcluster.AgentOptions{}, devcluster.AgentOptions{})
	before := m.client.Count()
	journal := t.TempDir()
	godwit := func(env []string, args ...string) ([]byte, error) {
		cmd := exec.Command(testutil.Godwit(t), args...)
		cmd.Env = append(append(os.Environ(), m.c.TLSEnv()...), env...)
		return cmd.CombinedOutput()
	}
	agents := []string{"--from-agent", m.a.Agent().Addr(), "--to-agent", m.b.Agent().Addr(), "--journal", journal}
	out, err := godwit([]string{failpoint.Arm("migrate/driver/after-ready", failpoint.ActionKill)},
		append([]string{"migrate", "w", "--id", "m-driver"}, agents...)...)
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("the driver was to die after the restore: %v\n%s", err, out)
	}
	assertNoCopy(t, "w", []*devcluster.Host{m.a, m.b})

	if out, err := godwit(nil, append([]string{"migrate", "--resume", "m-driver"}, agents...)...); err != nil {
		t.Fatalf("godwit migrate --resume: %v\n%s", err, out)
	}
	m.route(t, m.b)
	assertOneCopy(t, "w", m.b, []*devcluster.Host{m.a, m.b})
	m.assertWentOn(t, before)
}

// smallDisk is the size of the destination's loop-mounted data
// filesystem in the disk-full test.
const smallDisk = 26 << 20

// TestDestinationDiskFullAbortsAndTheSourceResumes gives the destination a
// data dir too small for the checkpoint (a loop-mounted 26 MiB ext4): the
// transfer fails there, the destination discards what it got and
// acknowledges, and the source runs on from where it was.
func TestDestinationDiskFullAbortsAndTheSourceResumes(t *testing.T) {
	m := startMoveCluster(t, "ctf", 9, devcluster.AgentOptions{}, devcluster.AgentOptions{}, func(b *devcluster.Host) {
		dir := b.DataDir()
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		// The image fits; the workload's 16 MiB of memory does not.
		snapshottest.MountLoopFilesystem(t, "ext4", "e2fsprogs", smallDisk, dir)
	})
	before := m.client.Count()
	res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-disk-full", Container: "w", Strategy: migrate.StopCopy},
		migrationAgent(m.a), migrationAgent(m.b), quickAbort)
	if err == nil || errors.Is(err, migrate.ErrHeld) || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("move onto a full disk: err = %v, want a clean abort naming the full disk", err)
	}
	if res.Record.Phase != migrate.PhaseAborted {
		t.Errorf("record ends in %s, want aborted", res.Record.Phase)
	}
	assertOneCopy(t, "w", m.a, []*devcluster.Host{m.a, m.b})
	m.assertWentOn(t, before)
	if entries, _ := os.ReadDir(filepath.Join(m.b.DataDir(), "checkpoints")); len(entries) != 0 {
		t.Errorf("the destination kept %v of the failed transfer", entries)
	}
}
