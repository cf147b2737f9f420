package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/godwit/godwit/agent/runtime"
)

const (
	toolGodwit = "godwit"

	godwitImage = "gwbench-ckpt-workload"
	// godwitCIDR is both agents' container addresses. They share it
	// because a restore keeps the container's IP: the second agent must
	// own the address the first one gave.
	godwitCIDR = "10.253.0.0/24"

	agentReadyTimeout = 30 * time.Second
	agentStopTimeout  = 10 * time.Second
	// cgroupRemoveTimeout covers shims still draining their container's
	// pipes after `rm -f` returned.
	cgroupRemoveTimeout = 5 * time.Second
	// agentLogTail is how much of an agent's log an error quotes.
	agentLogTail = 4 << 10
)

// godwit drives the godwit CLI against two agents on this host, each with
// its own data dir: a container runs and is checkpointed on the first,
// and its archive is restored on the second, as a move between nodes
// would do, the archive going from one to the other as a file.
type godwit struct {
	bin     string
	src     *agentProc
	dst     *agentProc
	node    nodeInfo
	dataDir string
	log     *slog.Logger
}

var _ engine = (*godwit)(nil)

// agentProc is one `godwit agent` the benchmark started.
type agentProc struct {
	name, addr, logPath string
	cmd                 *exec.Cmd
}

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
	if g.src, err = g.startAgent(ctx, "gwbench-ckpt-src", filepath.Join(dir, "src")); err != nil {
		return nil, err
	}
	if g.dst, err = g.startAgent(ctx, "gwbench-ckpt-dst", filepath.Join(dir, "dst")); err != nil {
		return nil, err
	}
	for _, a := range []*agentProc{g.src, g.dst} {
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

func (g *godwit) startAgent(ctx context.Context, name, dir string) (*agentProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	a := &agentProc{name: name, addr: addr, logPath: filepath.Join(dir, "agent.log")}
	logFile, err := os.Create(a.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the agent holds its own descriptor
	a.cmd = exec.Command(g.bin, "agent", "--insecure", "--name", name, "--data-dir", filepath.Join(dir, "data"),
		"--listen", addr, "--container-cidr", godwitCIDR)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	// Its own process group: a ^C meant for the benchmark must not stop
	// the agent before the benchmark has removed its containers.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent %s: %w", name, err)
	}
	g.log.Info("agent started", "node", name, "listen", addr)
	return a, nil
}

// waitReady waits until the agent answers `node info`.
func (g *godwit) waitReady(ctx context.Context, a *agentProc) error {
	deadline := time.Now().Add(agentReadyTimeout)
	for {
		_, err := g.cli(ctx, a, "node", "info")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent %s did not answer within %s: %w", a.name, agentReadyTimeout, err)
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
	for _, a := range []*agentProc{g.src, g.dst} {
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
func (g *godwit) removeCheckpoints(ctx context.Context, a *agentProc, name string) error {
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
func (g *godwit) containers(ctx context.Context, a *agentProc) ([]string, error) {
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
	for _, a := range []*agentProc{g.src, g.dst} {
		if a == nil {
			continue
		}
		if names, err := g.containers(ctx, a); err == nil && len(names) > 0 {
			if _, err := g.cli(ctx, a, append([]string{"rm", "-f"}, names...)...); err != nil {
				errs = append(errs, err)
			}
		}
		errs = append(errs, stopAgent(a))
	}
	return errors.Join(errs...)
}

func stopAgent(a *agentProc) error {
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(agentStopTimeout):
		_ = a.cmd.Process.Kill()
		<-done
	}
	for _, cg := range []string{"/godwit/" + a.name + ".shims", "/godwit/" + a.name} {
		deadline := time.Now().Add(cgroupRemoveTimeout)
		err := runtime.RemoveCgroup(cg)
		for ; err != nil && time.Now().Before(deadline); err = runtime.RemoveCgroup(cg) {
			time.Sleep(pollInterval)
		}
		if err != nil {
			return fmt.Errorf("agent %s: %w", a.name, err)
		}
	}
	return nil
}

// cli runs `godwit --agent ADDR ARGS...` against a and returns its
// standard output; an error quotes its standard error and the end of the
// agent's log.
func (g *godwit) cli(ctx context.Context, a *agentProc, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, g.bin, append([]string{"--agent", a.addr}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("godwit --agent %s %s (node %s): %w: %s\nthe agent's log %s ends with:\n%s",
			a.addr, strings.Join(args, " "), a.name, err, strings.TrimSpace(stderr.String()), a.logPath, tail(a.logPath, agentLogTail))
	}
	return stdout.Bytes(), nil
}

// freeAddr finds a free loopback port for an agent.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// tail returns the last n bytes of the file at path.
func tail(path string, n int64) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if int64(len(data)) > n {
		data = data[int64(len(data))-n:]
	}
	return string(data)
}
