package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	toolPodman = "podman"

	podmanImage   = "localhost/gwbench-ckpt-workload:latest"
	podmanNetwork = "gwbench-ckpt"
	// podmanSubnet is the bridge network of Podman's containers, apart
	// from godwit's (godwitCIDR) and from Podman's default 10.88.0.0/16,
	// which is also godwit's default.
	podmanSubnet = "10.254.0.0/24"

	// Podman raises RLIMIT_NOFILE and RLIMIT_NPROC by default, which runc
	// may not do where root lacks CAP_SYS_RESOURCE ("error setting rlimit
	// type 7: operation not permitted"). The container gets godwit's
	// limits instead: nofile 1024 soft, capped at the caller's hard limit
	// (podmanNofileHard at most), and nproc podmanNproc, far more than the
	// workload's few threads.
	podmanNofileSoft = 1024
	podmanNofileHard = 524288
	podmanNproc      = 4096
)

// podman drives the podman CLI with a store, run dir and network
// configuration of its own under the work dir, so the benchmark neither
// sees nor touches the host's containers, images or networks.
type podman struct {
	bin    string
	global []string // --root, --runroot, --network-config-dir
	ulimit []string
	log    *slog.Logger

	version, conmon, runtime string
}

var _ engine = (*podman)(nil)

// newPodman sets up Podman's store under dir, a bridge network and the
// workload image imported from rootfsTar.
func newPodman(ctx context.Context, bin, dir, rootfsTar string, log *slog.Logger) (_ *podman, err error) {
	if _, err := exec.LookPath(bin); err != nil {
		return nil, fmt.Errorf("podman not found (scripts/install-bench-deps.sh installs it), or measure godwit alone with --tools godwit: %w", err)
	}
	netDir := filepath.Join(dir, "net")
	if err := os.MkdirAll(netDir, 0o700); err != nil {
		return nil, err
	}
	p := &podman{
		bin: bin,
		global: []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"),
			"--network-config-dir", netDir},
		ulimit: []string{"--ulimit", fmt.Sprintf("nofile=%d:%d", podmanNofileSoft, nofileHard()),
			"--ulimit", fmt.Sprintf("nproc=%d:%d", podmanNproc, podmanNproc)},
		log: log.With("tool", toolPodman),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Close(context.WithoutCancel(ctx)))
		}
	}()
	if p.version, err = p.out(ctx, "version", "--format", "{{.Client.Version}}"); err != nil {
		return nil, err
	}
	if p.conmon, err = p.out(ctx, "info", "--format", "{{.Host.Conmon.Version}}"); err != nil {
		return nil, err
	}
	if p.runtime, err = p.out(ctx, "info", "--format", "{{.Host.OCIRuntime.Version}}"); err != nil {
		return nil, err
	}
	if _, err := p.out(ctx, "network", "create", "--subnet", podmanSubnet, podmanNetwork); err != nil {
		return nil, err
	}
	if _, err := p.out(ctx, "import", rootfsTar, podmanImage); err != nil {
		return nil, err
	}
	return p, nil
}

// nofileHard is podmanNofileHard capped at this process's own hard limit,
// which runc cannot raise.
func nofileHard() uint64 {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Max < podmanNofileHard {
		return lim.Max
	}
	return podmanNofileHard
}

func (p *podman) Name() string { return toolPodman }

func (p *podman) Versions() []string {
	return []string{
		fmt.Sprintf("podman %s, conmon %s, %s", p.version, conmonVersion(p.conmon), firstLine(p.runtime)),
		fmt.Sprintf("podman: store under the work dir (overlay), container on a CNI bridge network %s, "+
			"`--ulimit nofile=%d:%d --ulimit nproc=%d:%d`; `container checkpoint --export FILE --compress zstd`, "+
			"then `rm` (untimed), then `container restore --import FILE` on the same host",
			podmanSubnet, podmanNofileSoft, nofileHard(), podmanNproc, podmanNproc),
	}
}

func (p *podman) Run(ctx context.Context, name string, args []string) (string, error) {
	cmd := append([]string{"run", "-d", "--name", name, "--network", podmanNetwork}, p.ulimit...)
	cmd = append(append(cmd, podmanImage), args...)
	if _, err := p.out(ctx, cmd...); err != nil {
		return "", err
	}
	return p.ip(ctx, name)
}

func (p *podman) Checkpoint(ctx context.Context, name, archive string) error {
	_, err := p.out(ctx, "container", "checkpoint", "--export", archive, "--compress", "zstd", name)
	return err
}

// Release removes the checkpointed container: Podman restores an archive
// under the name it was taken from, which must then be free.
func (p *podman) Release(ctx context.Context, name string) error {
	_, err := p.out(ctx, "rm", name)
	return err
}

func (p *podman) Restore(ctx context.Context, _, archive string) (string, error) {
	id, err := p.out(ctx, "container", "restore", "--import", archive)
	if err != nil {
		return "", err
	}
	return p.ip(ctx, firstLine(id))
}

func (p *podman) Remove(ctx context.Context, name string) error {
	_, err := p.out(ctx, "rm", "--force", "--ignore", name)
	return err
}

// Close removes every container, the network (and so its bridge) and the
// images, which unmounts Podman's store.
func (p *podman) Close(ctx context.Context) error {
	var errs []error
	for _, args := range [][]string{
		{"rm", "--all", "--force"},
		{"network", "rm", "--force", podmanNetwork},
		{"rmi", "--all", "--force"},
	} {
		if _, err := p.out(ctx, args...); err != nil && !strings.Contains(err.Error(), "network not found") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *podman) ip(ctx context.Context, name string) (string, error) {
	ip, err := p.out(ctx, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
	if err == nil && ip == "" {
		err = fmt.Errorf("podman inspect %s shows no IP", name)
	}
	return ip, err
}

// out runs podman with the benchmark's store and returns its trimmed
// standard output; an error quotes its standard error.
func (p *podman) out(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, p.bin, append(append([]string{}, p.global...), args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// conmonVersion shortens "conmon version 2.1.6, commit: ..." to "2.1.6".
func conmonVersion(s string) string {
	v, _, _ := strings.Cut(strings.TrimPrefix(firstLine(s), "conmon version "), ",")
	return v
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
