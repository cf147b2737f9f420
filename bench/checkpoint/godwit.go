package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
)

const (
	toolGodwit = "godwit"

	godwitImage = "gwbench-ckpt-workload"
	// godwitCIDR is both agents' container addresses. They share it
	// because a restore keeps the container's IP: the second agent must
	// own the address the first one gave.
	godwitCIDR = "10.253.0.0/24"

	agentReadyTimeout = 30 * time.Second
)

// godwit drives the godwit CLI against two agents on this host, each with
// its own data dir: a container runs and is checkpointed on the first,
// and its archive is restored on the second, as a move between nodes
// would do, the archive going from one to the other as a file.
type godwit struct {
	bin     string
	src     *benchutil.Agent
	dst     *benchutil.Agent
	node    nodeInfo
	dataDir string
	log     *slog.Logger
}

var _ engine = (*godwit)(nil)

// nodeInfo is what `godwit node info -o json` says of the source node.
type nodeInfo struct {
	Snapshotter string `json:"snapshotter"`
	Kernel      string `json:"kernel"`
	Runc        string `json:"runc"`
	CRIU        string `json:"criu"`
	Godwit      string `json:"godwit"`
}

// containerInfo is the part of `godwit inspect -o json` the benchmark reads.
type containerInfo struct {
	Name  string `json:"name"`
	State string `json:"state"`
	IP    string `json:"ip"`
}

// newGodwit starts the two agents with their data under dir and imports
// the workload image on both.
func newGodwit(ctx context.Context, bin, dir, rootfsTar string, log *slog.Logger) (_ *godwit, err error) {
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, err
	}
	g := &godwit{bin: bin, dataDir: dir, log: log.With("tool", toolGodwit)}
	defer func() {
		if err != nil {
			err = errors.Join(err, g.Close(context.WithoutCancel(ctx)))
		}
	}()
	// The node names make the agents' cgroups (/godwit/NAME) the
	// benchmark's own.
	if g.src, err = g.startAgent("gwbench-ckpt-src", filepath.Join(dir, "src")); err != nil {
		return nil, err
	}
	if g.dst, err = g.startAgent("gwbench-ckpt-dst", filepath.Join(dir, "dst")); err != nil {
		return nil, err
	}
	for _, a := range []*benchutil.Agent{g.src, g.dst} {
		if err := g.waitReady(ctx, a); err != nil {
			return nil, err
		}
		if _, err := g.cli(ctx, a, "image", "import", rootfsTar, "--name", godwitImage); err != nil {
			return nil, err
		}
	}
	out, err := g.cli(ctx, g.src, "node", "info", "-o", "json")
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(out, &g.node); err != nil {
		return nil, fmt.Errorf("node info: %w", err)
	}
	return g, nil
}

func (g *godwit) startAgent(name, dir string) (*benchutil.Agent, error) {
	a, err := benchutil.StartAgent(benchutil.AgentConfig{Binary: g.bin, Node: name, Dir: dir, ContainerCIDR: godwitCIDR})
	if err != nil {
		return nil, err
	}
	g.log.Info("agent started", "node", name, "listen", a.Addr)
	return a, nil
}

// waitReady waits until the agent answers `node info`.
func (g *godwit) waitReady(ctx context.Context, a *benchutil.Agent) error {
	deadline := time.Now().Add(agentReadyTimeout)
	for {
		_, err := g.cli(ctx, a, "node", "info")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent %s did not answer within %s: %w", a.Node, agentReadyTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

func (g *godwit) Name() string { return toolGodwit }

func (g *godwit) Versions() []string {
	return []string{
		fmt.Sprintf("godwit %s, runc %s, CRIU %s (CGO_ENABLED=0)", g.node.Godwit, g.node.Runc, g.node.CRIU),
		fmt.Sprintf("godwit: two agents on this host, each with its own data dir (%s snapshotter); the container has its "+
			"own network namespace and a routed IP from %s; `checkpoint NAME --export FILE` on the first agent, "+
			"`restore --from FILE` on the second", g.node.Snapshotter, godwitCIDR),
	}
}

func (g *godwit) Run(ctx context.Context, name string, args []string) (string, error) {
	out, err := g.cli(ctx, g.src, append([]string{"run", "--name", name, "-o", "json", godwitImage, "--"}, args...)...)
	if err != nil {
		return "", err
	}
	var c containerInfo
	if err := json.Unmarshal(out, &c); err != nil {
		return "", fmt.Errorf("godwit run -o json: %w", err)
	}
	return c.IP, nil
}

func (g *godwit) Checkpoint(ctx context.Context, name, archive string) error {
	_, err := g.cli(ctx, g.src, "checkpoint", name, "--export", archive)
	return err
}

// Release does nothing: the archive is restored on the other agent, and
// the source's checkpointed container is removed with the rest.
func (g *godwit) Release(context.Context, string) error { return nil }

func (g *godwit) Restore(ctx context.Context, name, archive string) (string, error) {
	if _, err := g.cli(ctx, g.dst, "restore", "--from", archive); err != nil {
		return "", err
	}
	out, err := g.cli(ctx, g.dst, "inspect", name, "-o", "json")
	if err != nil {
		return "", err
	}
	var c containerInfo
	if err := json.Unmarshal(out, &c); err != nil {
		return "", fmt.Errorf("godwit inspect -o json: %w", err)
	}
	if c.State != "running" {
		return "", fmt.Errorf("the restored container is %s, want running", c.State)
	}
	return c.IP, nil
}

// Remove removes the container and its checkpoints from both agents,
// wherever they are, as `podman rm` removes a container with its
// checkpoint: the next run starts from the same state.
func (g *godwit) Remove(ctx context.Context, name string) error {
	var errs []error
	for _, a := range []*benchutil.Agent{g.src, g.dst} {
		names, err := g.containers(ctx, a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, n := range names {
			if n == name {
				if _, err := g.cli(ctx, a, "rm", "-f", name); err != nil {
					errs = append(errs, err)
				}
			}
		}
		errs = append(errs, g.removeCheckpoints(ctx, a, name))
	}
	return errors.Join(errs...)
}

// removeCheckpoints removes the container's checkpoints from agent a.
func (g *godwit) removeCheckpoints(ctx context.Context, a *benchutil.Agent, name string) error {
	out, err := g.cli(ctx, a, "checkpoint", "ls", "--container", name, "-o", "json")
	if err != nil {
		return err
	}
	var cps []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &cps); err != nil {
		return fmt.Errorf("godwit checkpoint ls -o json: %w", err)
	}
	if len(cps) == 0 {
		return nil
	}
	args := []string{"checkpoint", "rm"}
	for _, c := range cps {
		args = append(args, c.ID)
	}
	_, err = g.cli(ctx, a, args...)
	return err
}

// containers names every container on the agent, running or not.
func (g *godwit) containers(ctx context.Context, a *benchutil.Agent) ([]string, error) {
	out, err := g.cli(ctx, a, "ps", "-a", "-o", "json")
	if err != nil {
		return nil, err
	}
	var cs []containerInfo
	if err := json.Unmarshal(out, &cs); err != nil {
		return nil, fmt.Errorf("godwit ps -a -o json: %w", err)
	}
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Name
	}
	return names, nil
}

// Close removes what is left on both agents, stops them and removes their
// cgroups, which an agent keeps for its next start.
func (g *godwit) Close(ctx context.Context) error {
	var errs []error
	for _, a := range []*benchutil.Agent{g.src, g.dst} {
		if a == nil {
			continue
		}
		if names, err := g.containers(ctx, a); err == nil && len(names) > 0 {
			if _, err := g.cli(ctx, a, append([]string{"rm", "-f"}, names...)...); err != nil {
				errs = append(errs, err)
			}
		}
		errs = append(errs, a.Stop())
	}
	return errors.Join(errs...)
}

// cli runs `godwit --agent ADDR ARGS...` against a and returns its
// standard output; an error quotes its standard error and the end of the
// agent's log.
func (g *godwit) cli(ctx context.Context, a *benchutil.Agent, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, g.bin, append([]string{"--agent", a.Addr}, args...)...)
	cmd.Env = append(os.Environ(), a.CLIEnv()...) // the agent serves mutual TLS
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("godwit --agent %s %s (node %s): %w: %s\nthe agent's log %s ends with:\n%s",
			a.Addr, strings.Join(args, " "), a.Node, err, strings.TrimSpace(stderr.String()), a.LogPath, a.LogTail())
	}
	return stdout.Bytes(), nil
}
