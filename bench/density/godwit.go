package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/agent/runtime"
	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/internal/busybox"
	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

const (
	// nodeName names the benchmark's agent, and so its cgroups
	// (/godwit/bench, /godwit/bench.shims), apart from any test's node.
	nodeName  = "bench"
	imageName = "busybox"

	agentReadyTimeout = 30 * time.Second
	pollInterval      = 100 * time.Millisecond
)

// result is what one side of the comparison measured.
type result struct {
	// runs holds each container's time from request to running, in the
	// order they were started; total is the wall time of all of them.
	runs  []time.Duration
	total time.Duration
	// inits is each container's own process (the idle workload).
	inits []memory
	// hostPerContainer is the fall of MemAvailable while the containers
	// started, divided by their number: what each costs the host, kernel
	// objects (namespaces, cgroups, mounts, page tables) included.
	hostPerContainer int64

	// godwit only: its shims, its agent with the image imported and no
	// container, the agent with every container running, and the node's
	// own report of its versions.
	shims     []memory
	agentIdle memory
	agent     memory
	info      *pb.NodeInfoResponse
}

// measureGodwit starts an agent with its data under dir, imports busybox,
// runs o.n idle containers one after another and measures them, then
// removes every container and stops the agent.
func measureGodwit(ctx context.Context, o options, dir string, log *slog.Logger) (res *result, err error) {
	agent, err := benchutil.StartAgent(benchutil.AgentConfig{
		Binary: o.godwit, Node: nodeName, Dir: dir, ContainerCIDR: o.cidr, Args: []string{"--runc", o.runc}, Insecure: o.insecure,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		err = errors.Join(err, agent.Stop())
		if err != nil {
			err = fmt.Errorf("%w\nagent log %s ends with:\n%s", err, agent.LogPath, agent.LogTail())
		}
	}()

	conn, err := grpc.NewClient(agent.Addr, append(rpc.DialOptions(), grpc.WithTransportCredentials(agent.Credentials()))...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	client := pb.NewAgentServiceClient(conn)
	res = &result{}
	if res.info, err = waitReady(ctx, client); err != nil {
		return nil, err
	}
	if err := importBusybox(ctx, client, filepath.Join(dir, "busybox.tar")); err != nil {
		return nil, err
	}

	var ids []string
	defer func() { err = errors.Join(err, removeContainers(context.WithoutCancel(ctx), client, ids)) }()
	if res.agentIdle, err = readMemory(agent.Pid()); err != nil {
		return nil, err
	}
	before, err := benchutil.MemAvailable()
	if err != nil {
		return nil, err
	}
	var pids []int
	start := time.Now()
	for i := range o.n {
		req := &pb.RunContainerRequest{Name: fmt.Sprintf("bench-%03d", i), Image: imageName, Args: workload}
		t0 := time.Now()
		c, err := client.RunContainer(ctx, req)
		took := time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("run %s: %w", req.Name, err)
		}
		ids = append(ids, c.GetId())
		if c.GetState() != pb.ContainerState_CONTAINER_STATE_RUNNING || c.GetPid() <= 0 {
			return nil, fmt.Errorf("run %s: the reply says %s with pid %d, want running", req.Name, c.GetState(), c.GetPid())
		}
		res.runs = append(res.runs, took)
		pids = append(pids, int(c.GetPid()))
	}
	res.total = time.Since(start)
	log.Info("godwit containers running", "containers", len(ids), "took", res.total)

	if res.hostPerContainer, err = settledHostCost(ctx, before, o.n); err != nil {
		return nil, err
	}
	if res.agent, err = readMemory(agent.Pid()); err != nil {
		return nil, err
	}
	for i, id := range ids {
		shimPid, alive := runtime.ShimAlive(filepath.Join(agent.DataDir, "containers", id, "state"))
		if !alive {
			return nil, fmt.Errorf("container %s has no live shim (pid file says %d)", id, shimPid)
		}
		shim, err := readMemory(shimPid)
		if err != nil {
			return nil, fmt.Errorf("shim of %s: %w", id, err)
		}
		init, err := readMemory(pids[i])
		if err != nil {
			return nil, fmt.Errorf("process of %s: %w", id, err)
		}
		res.shims = append(res.shims, shim)
		res.inits = append(res.inits, init)
	}
	return res, nil
}

// waitReady waits for the agent to answer, and returns what it says of
// its node.
func waitReady(ctx context.Context, client pb.AgentServiceClient) (*pb.NodeInfoResponse, error) {
	deadline := time.Now().Add(agentReadyTimeout)
	for {
		info, err := client.NodeInfo(ctx, &pb.NodeInfoRequest{})
		if err == nil {
			return info, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the agent did not answer within %s: %w", agentReadyTimeout, err)
		}
		if err := benchutil.Sleep(ctx, pollInterval); err != nil {
			return nil, err
		}
	}
}

// importBusybox writes a busybox rootfs tarball to path and imports it as
// imageName, as `godwit image import` does.
func importBusybox(ctx context.Context, client pb.AgentServiceClient, path string) error {
	if err := busybox.WriteTar(path); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := agentclient.ImportImage(ctx, client, f, imageName, 0); err != nil {
		return fmt.Errorf("import busybox: %w", err)
	}
	return nil
}

// removeContainers removes every container as `godwit rm -f` does.
func removeContainers(ctx context.Context, client pb.AgentServiceClient, ids []string) error {
	var errs []error
	for _, id := range ids {
		if _, err := client.RemoveContainer(ctx, &pb.RemoveContainerRequest{Ref: id, Force: true}); err != nil {
			errs = append(errs, fmt.Errorf("rm -f %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// settledHostCost waits settleTime for the last of n containers to finish
// starting, then returns how much MemAvailable fell per container since
// before, read before the first of them started. Both sides of the
// comparison end their measure here, so that they are weighed alike.
func settledHostCost(ctx context.Context, before int64, n int) (int64, error) {
	if err := benchutil.Sleep(ctx, settleTime); err != nil {
		return 0, err
	}
	after, err := benchutil.MemAvailable()
	if err != nil {
		return 0, err
	}
	return (before - after) / int64(n), nil
}
