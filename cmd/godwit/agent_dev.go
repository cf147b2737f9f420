package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/internal/busybox"
	"github.com/godwit/godwit/internal/clictx"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/server"
	"github.com/godwit/godwit/scheduler/state"
)

// `godwit agent --dev`: one process, one machine, zero configuration: an
// agent and an embedded single-voter scheduler that trust each other
// through a throwaway CA, and a CLI context that points plain `godwit`
// commands at them while they run.

const (
	// devName names the dev node, and the CLI context.
	devName = "dev"
	// devSchedulerName is the embedded scheduler's name.
	devSchedulerName = "dev-scheduler"
	// devHost is where everything listens: this machine only.
	devHost = "127.0.0.1"
	// devAgentListen, devSchedulerListen: the default agent port, and
	// the scheduler's (raft and gossip on the next two ports).
	devAgentListen     = devHost + ":7701"
	devSchedulerListen = devHost + ":7710"
)

// devSetup is what --dev prepared: the files the agent uses, the
// embedded scheduler and how to undo the context.
type devSetup struct {
	dir         string
	agentTLS    pki.Files
	operatorTLS pki.Files
	scheduler   *server.Scheduler
	// restoreContext puts back the CLI's previous current context.
	restoreContext func()
}

// startDev prepares the dev cluster under dataDir (a new temporary
// directory when empty): CA and certificates in dataDir/tls (reused when
// present, so a restarted dev agent keeps its trust), the gossip key,
// the embedded scheduler, and the CLI context "dev".
func startDev(ctx context.Context, dataDir string, log *slog.Logger) (_ *devSetup, err error) {
	d := &devSetup{dir: dataDir}
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "godwit-dev-"); err != nil {
			return nil, fmt.Errorf("--dev: create a data dir: %w", err)
		}
	}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	tlsDir := filepath.Join(d.dir, "tls")
	ca, err := devCA(tlsDir)
	if err != nil {
		return nil, err
	}
	issue := func(name string, role pki.Role) (pki.Files, error) {
		req := pki.CertRequest{Name: name, Role: role}
		if role.Serves() {
			req.Hosts = []string{devHost}
		}
		return ca.IssueTo(filepath.Join(tlsDir, name), req)
	}
	if d.agentTLS, err = issue(devName, pki.RoleAgent); err != nil {
		return nil, err
	}
	schedTLS, err := issue(devSchedulerName, pki.RoleScheduler)
	if err != nil {
		return nil, err
	}
	if d.operatorTLS, err = issue("dev-operator", pki.RoleOperator); err != nil {
		return nil, err
	}
	keyFile := filepath.Join(tlsDir, "gossip.key")
	if _, err := os.Stat(keyFile); errors.Is(err, fs.ErrNotExist) {
		if err := pki.CreateGossipKey(keyFile); err != nil {
			return nil, err
		}
	}
	key, err := pki.LoadGossipKey(keyFile)
	if err != nil {
		return nil, err
	}
	schedID, err := pki.Load(schedTLS)
	if err != nil {
		return nil, err
	}
	raftAddr, _ := portOffset(devSchedulerListen, raftPortOffset)
	gossipAddr, _ := portOffset(devSchedulerListen, gossipPortOffset)
	if d.scheduler, err = server.Start(ctx, server.Config{
		Name:            devSchedulerName,
		DataDir:         filepath.Join(d.dir, "scheduler"),
		Listen:          devSchedulerListen,
		RaftListen:      raftAddr,
		GossipListen:    gossipAddr,
		BootstrapExpect: 1,
		Identity:        schedID,
		GossipKey:       key,
		Timing:          server.LANTiming,
		Logger:          log,
	}); err != nil {
		return nil, fmt.Errorf("--dev: start the embedded scheduler: %w", err)
	}
	d.restoreContext, err = useDevContext(d.operatorTLS)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// devCA loads the dev CA from dir, or creates it there.
func devCA(dir string) (*pki.CA, error) {
	certFile, keyFile := filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile)
	if _, err := os.Stat(certFile); err == nil {
		return pki.LoadCA(certFile, keyFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--dev: %w", err)
	}
	ca, err := pki.NewCA("godwit dev CA")
	if err != nil {
		return nil, err
	}
	return ca, ca.WriteFiles(certFile, keyFile)
}

// useDevContext makes the context "dev" current and returns how to put
// the previous one back.
func useDevContext(operator pki.Files) (func(), error) {
	var previous string
	if f, err := clictx.Load(); err == nil {
		if cur, ok := f.Current(); ok && cur.Name != devName {
			previous = cur.Name
		}
	}
	if err := clictx.Save(clictx.Context{Name: devName, Addr: devSchedulerListen, TLS: operator}, true); err != nil {
		return nil, fmt.Errorf("--dev: save the CLI context: %w", err)
	}
	return func() {
		_ = clictx.Remove(devName)
		if previous != "" {
			_ = clictx.Use(previous)
		}
	}, nil
}

// close stops the embedded scheduler and removes the context. The data
// dir stays: containers may still run from it.
func (d *devSetup) close() {
	if d.restoreContext != nil {
		d.restoreContext()
	}
	if d.scheduler != nil {
		d.scheduler.Close()
	}
}

// devAgent starts the dev cluster's scheduler and points the agent's
// configuration at it: the dev node's name and certificate, a data dir
// inside the dev dir (--data-dir, or a temporary one), and the
// scheduler's gossip.
func devAgent(ctx context.Context, cfg *agent.Config, tlsFiles *pki.Files, cluster *agentClusterFlags, insecure bool, log *slog.Logger) (*devSetup, error) {
	if insecure || !tlsFiles.IsZero() || len(cluster.join) > 0 || cluster.gossipKeyFile != "" {
		return nil, errors.New("--dev makes its own CA, certificates and gossip key, and joins its own scheduler: drop --insecure, --tls-*, --join and --gossip-key-file")
	}
	d, err := startDev(ctx, cfg.DataDir, log)
	if err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = devName
	}
	// The dev dir holds the CA, the scheduler's raft and the agent's data
	// side by side.
	cfg.DataDir = filepath.Join(d.dir, "agent")
	*tlsFiles = d.agentTLS
	gossip, _ := portOffset(devSchedulerListen, gossipPortOffset)
	cluster.join = []string{gossip}
	cluster.gossipKeyFile = filepath.Join(d.dir, "tls", "gossip.key")
	return d, nil
}

// devImageWait bounds how long the dev agent waits for its node to
// register before it offers the busybox image.
const devImageWait = time.Minute

// offerBusybox imports the image "busybox" (busybox-static and its
// applets) onto the dev node once it has registered, unless the node
// holds one already: a new user's first `godwit run busybox -- ...` then
// just works, with no registry to pull from. Without busybox-static
// nothing is offered; the user imports an image instead.
func (d *devSetup) offerBusybox(ctx context.Context, log *slog.Logger) {
	if _, err := os.Stat(busybox.Path); err != nil {
		log.Info("no busybox-static on this machine: import an image with `godwit image import FILE --name NAME`", "looked_at", busybox.Path)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, devImageWait)
	defer cancel()
	for {
		snap := d.scheduler.Store().Snapshot()
		if n, ok := snap.Node(devName); ok && n.Health == state.HealthAlive {
			if snap.HasImage(devName, devImage) {
				return
			}
			break
		}
		select {
		case <-ctx.Done():
			log.Warn("the dev node did not register in time: no busybox image offered", "waited", devImageWait)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := d.importBusybox(ctx); err != nil {
		log.Warn("offer the busybox image", "err", err)
		return
	}
	log.Info("image busybox imported from busybox-static: `godwit run busybox -- sh -c ...` works now")
}

// devImage is the image the dev agent offers.
const devImage = "busybox"

func (d *devSetup) importBusybox(ctx context.Context) error {
	tarball := filepath.Join(d.dir, "busybox.tar")
	if err := busybox.WriteTar(tarball); err != nil {
		return err
	}
	defer os.Remove(tarball)
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	id, err := pki.Load(d.operatorTLS)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(devSchedulerListen, append(rpc.DialOptions(), grpc.WithTransportCredentials(credentials.NewTLS(id.ClientConfig())))...)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = streamImage(ctx, pb.NewClusterServiceClient(conn), f, devName, devImage, 0)
	return err
}
