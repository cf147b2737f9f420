package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	criu_core "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/checkpoint/criuimg"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// unreachableAgent makes a command that wrongly gets as far as calling the
// agent fail fast, with a message no validation test expects.
const unreachableAgent = "127.0.0.1:1"

// runGodwit runs the CLI with args and returns its stdout, stderr and
// error.
func runGodwit(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCommand()
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs(append([]string{"--agent", unreachableAgent}, args...))
	err := root.ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}

func TestRestoreRefusesAmbiguousSources(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "neither NAME nor --from", args: []string{"restore"}, want: "godwit restore NAME"},
		{name: "both NAME and --from", args: []string{"restore", "c1", "--from", "c1.gwc"}, want: "not both"},
		{name: "two names", args: []string{"restore", "c1", "c2"}, want: "one container NAME"},
		{name: "--checkpoint with --from", args: []string{"restore", "--from", "c1.gwc", "--checkpoint", "abc"}, want: "--checkpoint"},
		{name: "--decrypt-key without --from", args: []string{"restore", "c1", "--decrypt-key", "k"}, want: "--decrypt-key applies to --from"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runGodwit(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("godwit %s: error %v, want one containing %q", strings.Join(tt.args, " "), err, tt.want)
			}
		})
	}
}

func TestRestoreAcceptsOneSource(t *testing.T) {
	tests := []struct {
		name string
		args []string
		opts restoreOptions
	}{
		{name: "latest checkpoint", args: []string{"c1"}},
		{name: "given checkpoint, new name", args: []string{"c1"}, opts: restoreOptions{checkpoint: "abc", name: "c2"}},
		{name: "archive", opts: restoreOptions{from: "c1.gwc"}},
		{name: "encrypted archive, new name", opts: restoreOptions{from: "c1.gwc", decryptKey: "k", name: "c2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.opts.check(tt.args); err != nil {
				t.Fatalf("check(%v) = %v", tt.args, err)
			}
		})
	}
}

func TestCheckpointRefusesBadFlagsBeforeCallingTheAgent(t *testing.T) {
	dir := t.TempDir()
	notAKey := filepath.Join(dir, "not-a-key")
	if err := os.WriteFile(notAKey, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no container", args: []string{"checkpoint"}, want: "name one container"},
		{name: "--encrypt-key without --export", args: []string{"checkpoint", "c1", "--encrypt-key", notAKey}, want: "add --export FILE"},
		{name: "--compress without --export", args: []string{"checkpoint", "c1", "--compress", "none"}, want: "add --export FILE"},
		{name: "unknown compression", args: []string{"checkpoint", "c1", "--export", filepath.Join(dir, "a.gwc"), "--compress", "gzip"}, want: `--compress "gzip": use zstd or none`},
		{name: "export into a missing directory", args: []string{"checkpoint", "c1", "--export", filepath.Join(dir, "missing", "a.gwc")}, want: "no such file or directory"},
		{name: "export onto a directory", args: []string{"checkpoint", "c1", "--export", dir}, want: "is a directory"},
		{name: "key file without a key", args: []string{"checkpoint", "c1", "--export", filepath.Join(dir, "a.gwc"), "--encrypt-key", notAKey}, want: "--encrypt-key"},
		{name: "key file missing", args: []string{"checkpoint", "c1", "--export", filepath.Join(dir, "a.gwc"), "--encrypt-key", filepath.Join(dir, "nokey")}, want: "no such file"},
		{name: "export with the wrong number of arguments", args: []string{"checkpoint", "export", "abc"}, want: "accepts 2 arg(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runGodwit(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("godwit %s: error %v, want one containing %q", strings.Join(tt.args, " "), err, tt.want)
			}
			if strings.Contains(err.Error(), "cannot reach the agent") {
				t.Fatalf("the flags were not checked before the agent was called: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "a.gwc")); err == nil {
				t.Fatal("a refused export left a file behind")
			}
		})
	}
}

func TestCheckpointSubcommandsAreNotContainerNames(t *testing.T) {
	// "ls" must reach the list command (and so the agent), not be taken
	// for a container called ls.
	_, _, err := runGodwit(t, "checkpoint", "ls")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the agent at "+unreachableAgent) {
		t.Fatalf("checkpoint ls: %v, want the unreachable agent's advice", err)
	}
}

func TestKeygenNeverOverwrites(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	out, _, err := runGodwit(t, "checkpoint", "keygen", key)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, key) {
		t.Errorf("keygen output %q does not name the key file", out)
	}
	st, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	before, _ := os.ReadFile(key)
	if _, _, err := runGodwit(t, "checkpoint", "keygen", key); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second keygen: %v, want a refusal to overwrite", err)
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(before, after) {
		t.Fatal("second keygen changed the key file")
	}
}

// fixture is a checkpoint directory with the smallest CRIU images that
// criuimg.Inspect reads (one zombie task) and CRIU's real stats-dump.
type fixture struct {
	m        *bundle.Manifest
	dir      string
	criuSize int64
}

// specMarker is a string found once in the fixture's archive, to tamper
// with.
const specMarker = "godwit-fixture-spec"

func newFixture(t *testing.T) fixture {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, bundle.CRIUDir), 0o700); err != nil {
		t.Fatal(err)
	}
	criuDir := filepath.Join(dir, bundle.CRIUDir)
	writeCRIUImage(t, criuDir, "pstree.img", "PSTREE", &pstree.PstreeEntry{
		Pid: proto.Uint32(1), Ppid: proto.Uint32(0), Pgid: proto.Uint32(1), Sid: proto.Uint32(1),
	})
	const zombie = 6 // CRIU's TASK_ZOMBIE: nothing else is read for it
	writeCRIUImage(t, criuDir, "core-1.img", "CORE", &criu_core.CoreEntry{
		Mtype: criu_core.CoreEntry_X86_64.Enum(),
		Tc: &criu_core.TaskCoreEntry{
			TaskState: proto.Uint32(zombie), ExitCode: proto.Uint32(0), Personality: proto.Uint32(0),
			Flags: proto.Uint32(0), BlkSigset: proto.Uint64(0), Comm: proto.String("counter"),
		},
	})
	stats, err := os.ReadFile("../../agent/checkpoint/criuimg/testdata/stats-dump")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(criuDir, "stats-dump"), stats, 0o600); err != nil {
		t.Fatal(err)
	}
	spec := `{"ociVersion":"1.2.0","annotations":{"test":"` + specMarker + `"}}`
	if err := os.WriteFile(filepath.Join(dir, bundle.SpecName), []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &bundle.Manifest{
		ID:      "0123456789ab",
		Created: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Container: bundle.Container{
			Name: "c1", ID: "fedcba9876543210fedcba9876543210", IP: "10.88.0.5",
		},
		Image: bundle.Image{Name: "counter", Layers: []digest.Digest{digest.FromString("layer")}},
		Host: bundle.HostInfo{
			Node: "node-a", CRIUVersion: "4.2.1", RuncVersion: "1.3.6", Kernel: "6.18.0",
		},
		Spec:    bundle.SpecName,
		Options: bundle.Options{TCPEstablished: true},
		Stats: bundle.Stats{
			FreezingTimeUs: 661, FrozenTimeUs: 126557, MemdumpTimeUs: 2787, MemwriteTimeUs: 1200,
			PagesScanned: 426, PagesWritten: 318,
		},
	}
	if err := bundle.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	var criuSize int64
	for _, f := range m.Files {
		if strings.HasPrefix(f.Path, "criu/") {
			criuSize += f.Size
		}
	}
	return fixture{m: m, dir: dir, criuSize: criuSize}
}

func writeCRIUImage(t *testing.T, dir, name, magic string, entry proto.Message) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := &crit.CriuImage{Magic: magic, Entries: []*crit.CriuEntry{{Message: entry}}}
	if err := crit.New(nil, f, "", false, false).Encode(img); err != nil {
		t.Fatalf("encode %s: %v", name, err)
	}
}

// export writes the fixture to an archive file, encrypted when keyFile is
// set.
func (fx fixture) export(t *testing.T, compression bundle.Compression, keyFile string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c1.gwc")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := bundle.Export(context.Background(), fx.dir, f, bundle.ExportOptions{Compression: compression, EncryptKeyFile: keyFile}); err != nil {
		t.Fatal(err)
	}
	return path
}

func newKey(t *testing.T) string {
	t.Helper()
	key := filepath.Join(t.TempDir(), "key")
	if err := bundle.GenerateKey(key); err != nil {
		t.Fatal(err)
	}
	return key
}

// privateTmp points the local inspect's temporary directory at a fresh
// one and returns it, to check that nothing is left there.
func privateTmp(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	return tmp
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		t.Fatalf("%s still holds %s after inspect", dir, entries[0].Name())
	}
}

func TestInspectArchiveFileJSON(t *testing.T) {
	fx := newFixture(t)
	key := newKey(t)
	tests := []struct {
		name string
		path string
		args []string
	}{
		{name: "zstd", path: fx.export(t, bundle.Zstd, "")},
		{name: "uncompressed", path: fx.export(t, bundle.NoCompression, "")},
		{name: "encrypted", path: fx.export(t, bundle.Zstd, key), args: []string{"--decrypt-key", key}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := privateTmp(t)
			out, _, err := runGodwit(t, append([]string{"checkpoint", "inspect", tt.path, "-o", "json"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			assertEmpty(t, tmp)
			var got struct {
				ID             string    `json:"id"`
				Container      string    `json:"container"`
				IP             string    `json:"ip"`
				Image          string    `json:"image"`
				ImageLayers    []string  `json:"image_layers"`
				Created        time.Time `json:"created"`
				SizeBytes      int64     `json:"size_bytes"`
				Node           string    `json:"node"`
				CRIUVersion    string    `json:"criu_version"`
				TCPEstablished bool      `json:"tcp_established"`
				Stats          struct {
					FrozenTimeUs int64 `json:"frozen_time_us"`
					PagesWritten int64 `json:"pages_written"`
					ImageBytes   int64 `json:"image_bytes"`
				} `json:"stats"`
				Processes []struct {
					PID   int    `json:"pid"`
					Comm  string `json:"comm"`
					State string `json:"state"`
				} `json:"processes"`
				Mounts   []any    `json:"mounts"`
				Warnings []string `json:"warnings"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("output is not one JSON object: %v\n%s", err, out)
			}
			m := fx.m
			switch {
			case got.ID != m.ID, got.Container != "c1", got.IP != "10.88.0.5", got.Image != "counter",
				len(got.ImageLayers) != 1, !got.Created.Equal(m.Created), got.Node != "node-a",
				got.CRIUVersion != "4.2.1", !got.TCPEstablished:
				t.Errorf("summary = %+v, want the manifest's", got)
			case got.SizeBytes != m.Size():
				t.Errorf("size_bytes = %d, want %d", got.SizeBytes, m.Size())
			case got.Stats.FrozenTimeUs != 126557 || got.Stats.PagesWritten != 318:
				t.Errorf("stats = %+v, want the manifest's", got.Stats)
			case got.Stats.ImageBytes != fx.criuSize:
				t.Errorf("image_bytes = %d, want the size of criu/ (%d)", got.Stats.ImageBytes, fx.criuSize)
			case len(got.Processes) != 1 || got.Processes[0].PID != 1 || got.Processes[0].Comm != "counter" || got.Processes[0].State != "zombie":
				t.Errorf("processes = %+v, want pid 1 counter, zombie", got.Processes)
			case got.Mounts == nil || got.Warnings == nil:
				t.Errorf("empty lists print as null: mounts %v, warnings %v", got.Mounts, got.Warnings)
			}
		})
	}
}

func TestInspectArchiveFileText(t *testing.T) {
	fx := newFixture(t)
	privateTmp(t)
	out, _, err := runGodwit(t, "checkpoint", "inspect", fx.export(t, bundle.Zstd, ""))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Checkpoint  0123456789ab\n",
		"Container   c1 (fedcba987654)\n",
		"IP          10.88.0.5\n",
		"Versions    CRIU 4.2.1, runc 1.3.6, kernel 6.18.0\n",
		"Options     tcp-established\n",
		"\nProcess tree",
		"1 [counter]",
		"frozen time",
		"126.557ms",
		"pages written",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
}

// flipByteAfter changes the byte just after the first occurrence of
// marker in the file.
func flipByteAfter(t *testing.T, path, marker string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte(marker))
	if i < 0 {
		t.Fatalf("%q not found in %s", marker, path)
	}
	data[i+len(marker)] ^= 0x01
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestInspectArchiveFileRefusals(t *testing.T) {
	fx := newFixture(t)
	key, otherKey := newKey(t), newKey(t)
	encrypted := fx.export(t, bundle.Zstd, key)
	tampered := fx.export(t, bundle.NoCompression, "")
	flipByteAfter(t, tampered, specMarker)
	tamperedCipher := fx.export(t, bundle.Zstd, key)
	data, err := os.ReadFile(tamperedCipher)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-20] ^= 0x01 // inside the last authenticated chunk
	if err := os.WriteFile(tamperedCipher, data, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "tampered member", args: []string{tampered}, want: []string{"config.json", "sha256 mismatch"}},
		{name: "encrypted without a key", args: []string{encrypted}, want: []string{"pass --decrypt-key FILE"}},
		{name: "wrong key", args: []string{encrypted, "--decrypt-key", otherKey}, want: []string{"does not open this archive"}},
		{name: "plaintext with a key", args: []string{fx.export(t, bundle.Zstd, ""), "--decrypt-key", key}, want: []string{"not encrypted"}},
		{name: "tampered ciphertext", args: []string{tamperedCipher, "--decrypt-key", key}, want: []string{"inspect " + tamperedCipher, "tampered"}},
		{name: "missing file", args: []string{"./no-such.gwc"}, want: []string{"no such file"}},
		{name: "--decrypt-key with an ID", args: []string{"0123456789ab", "--decrypt-key", key}, want: []string{"--decrypt-key applies to an archive FILE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := privateTmp(t)
			out, _, err := runGodwit(t, append([]string{"checkpoint", "inspect"}, tt.args...)...)
			if err == nil {
				t.Fatalf("inspect %v succeeded:\n%s", tt.args, out)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if out != "" {
				t.Errorf("a refused inspect printed %q", out)
			}
			assertEmpty(t, tmp)
		})
	}
}

// TestStoredAndArchivedCheckpointsPrintAlike: what the agent sends for a
// stored checkpoint (as its server converts the manifest and report) and
// what an archive of the same checkpoint gives here print the same.
func TestStoredAndArchivedCheckpointsPrintAlike(t *testing.T) {
	fx := newFixture(t)
	report, err := criuimg.Inspect(filepath.Join(fx.dir, bundle.CRIUDir))
	if err != nil {
		t.Fatal(err)
	}
	report.Processes[0].Files = []criuimg.File{{FD: 0, Type: "PIPE", Path: "pipe:[7]"}}
	report.Processes[0].Sockets = []criuimg.Socket{{FD: 3, Family: "IPv4", Type: "STREAM", Protocol: "TCP", State: "ESTABLISHED",
		LocalAddr: "10.88.0.5", LocalPort: 7000, RemoteAddr: "10.88.0.1", RemotePort: 40000, Inode: 9}}
	report.Mounts = []criuimg.Mount{{ID: 1, ParentID: 0, Mountpoint: "/", FSType: "overlay", Source: "overlay", Options: "rw"}}
	report.Warnings = []string{"pid 1: no command line"}
	m := fx.m
	stored := &pb.CheckpointDetail{
		Checkpoint: &pb.Checkpoint{
			Id: m.ID, ContainerName: m.Container.Name, ContainerId: m.Container.ID, Created: timestamppb.New(m.Created),
			Image: m.Image.Name, ImageLayers: []string{m.Image.Layers[0].String()}, Ip: m.Container.IP,
			SizeBytes: m.Size(), TcpEstablished: true, Node: m.Host.Node, CriuVersion: m.Host.CRIUVersion,
			RuncVersion: m.Host.RuncVersion, KernelVersion: m.Host.Kernel,
			Stats: &pb.CheckpointStats{FreezingTimeUs: 661, FrozenTimeUs: 126557, MemdumpTimeUs: 2787, MemwriteTimeUs: 1200,
				PagesScanned: 426, PagesWritten: 318, ImageBytes: fx.criuSize},
		},
		Processes: []*pb.CheckpointProcess{{
			Pid: 1, Ppid: 0, Pgid: 1, Sid: 1, State: "zombie", Comm: "counter",
			Files: []*pb.CheckpointFile{{Fd: 0, Type: "PIPE", Path: "pipe:[7]"}},
			Sockets: []*pb.CheckpointSocket{{Fd: 3, Family: "IPv4", Type: "STREAM", Protocol: "TCP", State: "ESTABLISHED",
				LocalAddr: "10.88.0.5", LocalPort: 7000, RemoteAddr: "10.88.0.1", RemotePort: 40000, Inode: 9}},
		}},
		Mounts:      []*pb.CheckpointMount{{Id: 1, ParentId: 0, Mountpoint: "/", Fstype: "overlay", Source: "overlay", Options: "rw"}},
		MemoryBytes: report.MemoryBytes,
		Warnings:    report.Warnings,
	}
	render := func(v checkpointDetailView) (string, string) {
		var js, text bytes.Buffer
		if err := printJSON(&js, v); err != nil {
			t.Fatal(err)
		}
		if err := writeCheckpointDetail(&text, v); err != nil {
			t.Fatal(err)
		}
		return js.String(), text.String()
	}
	fromAgentJSON, fromAgentText := render(newCheckpointDetailView(stored))
	fromFileJSON, fromFileText := render(archiveDetailView(m, report))
	if fromAgentJSON != fromFileJSON {
		t.Errorf("JSON differs:\nagent:\n%s\nfile:\n%s", fromAgentJSON, fromFileJSON)
	}
	if fromAgentText != fromFileText {
		t.Errorf("text differs:\nagent:\n%s\nfile:\n%s", fromAgentText, fromFileText)
	}
	for _, want := range []string{"TCP", "10.88.0.5:7000 -> 10.88.0.1:40000 ESTABLISHED", "pipe:[7]", "overlay"} {
		if !strings.Contains(fromFileText, want) {
			t.Errorf("text lacks %q:\n%s", want, fromFileText)
		}
	}
}

func TestCheckpointTable(t *testing.T) {
	created := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	views := []checkpointView{
		{ID: "0123456789ab", Container: "c1", Created: created, SizeBytes: 64 << 20, Node: "node-a",
			Stats: checkpointStatsView{FrozenTimeUs: 126557}},
		{ID: "ba9876543210", Container: "web", Created: created, SizeBytes: 3 << 30, Node: "node-b",
			Stats: checkpointStatsView{FrozenTimeUs: 2_345_678}},
	}
	var buf bytes.Buffer
	if err := writeCheckpointTable(&buf, views); err != nil {
		t.Fatal(err)
	}
	when := created.Local().Format(time.DateTime)
	want := "ID            CONTAINER  CREATED              SIZE      FROZEN   NODE\n" +
		"0123456789ab  c1         " + when + "  64.0 MiB  126.6ms  node-a\n" +
		"ba9876543210  web        " + when + "  3.0 GiB   2.35s    node-b\n"
	if got := buf.String(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteRestore(t *testing.T) {
	v := newRestoreView(&pb.RestoreResponse{
		Container: &pb.Container{Name: "c1", Node: "node-b", Ip: "10.88.0.5", State: pb.ContainerState_CONTAINER_STATE_RUNNING},
		Checkpoint: &pb.Checkpoint{Id: "0123456789ab", Created: timestamppb.Now(),
			Stats: &pb.CheckpointStats{RestoreTimeUs: 812_345}},
		Warnings: []string{"kernel 6.18.0 differs from the dumping host's 6.17.1"},
	})
	var stdout, stderr bytes.Buffer
	if err := writeRestore(&stdout, &stderr, v); err != nil {
		t.Fatal(err)
	}
	if got, want := stdout.String(), "restored c1 on node-b with IP 10.88.0.5 from checkpoint 0123456789ab in 812.3ms\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if got, want := stderr.String(), "warning: kernel 6.18.0 differs from the dumping host's 6.17.1\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

func TestCheckpointSummaryLine(t *testing.T) {
	v := checkpointView{Container: "c1", Node: "node-a", SizeBytes: 70 << 20,
		Stats: checkpointStatsView{FrozenTimeUs: 126557, ImageBytes: 68 << 20}}
	if got, want := checkpointSummary(v), "checkpointed c1 on node-a: frozen 126.6ms, 70.0 MiB (CRIU images 68.0 MiB)"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
}

func TestProgressWithoutTerminalPrintsOneLinePerPhase(t *testing.T) {
	var buf bytes.Buffer
	ui := newProgressUI(&buf, "checkpoint c1")
	for _, p := range []struct {
		phase       string
		done, total int64
	}{
		{"dumping", 0, 0}, {"dumping", 1 << 20, 0}, {"dumping", 2 << 20, 0},
		{"rootfs", 10, 0}, {"sealing", 5, 100}, {"sealing", 100, 100}, {"done", 100, 100},
	} {
		ui.update(p.phase, p.done, p.total)
	}
	ui.finish()
	want := "checkpoint c1: dumping\ncheckpoint c1: rootfs\ncheckpoint c1: sealing\n"
	if got := buf.String(); got != want {
		t.Errorf("progress:\n%s\nwant:\n%s", got, want)
	}
}
