package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/godwit/godwit/agent/runtime"
	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/internal/busybox"
)

const (
	// baselineIDPrefix and baselineCgroupParent keep the baseline's runc
	// containers and cgroups apart from every node's and test's.
	baselineIDPrefix     = "godwit-bench-base-"
	baselineCgroupParent = "/godwit-bench-baseline"
	// runcErrTail is how much of runc's output an error quotes.
	runcErrTail = 2 << 10
)

// measureBaseline runs the same idle workload o.n times with bare
// `runc run --detach`, from bundles under dir prepared beforehand (not
// timed): the spec godwit would write, minus the network namespace path,
// so runc makes an empty one of its own; and a rootfs directory per
// container whose files are hard links to one busybox tree, so that, as
// with godwit's shared image layer, every container's busybox is one file
// in the page cache. There is no snapshot, veth, address or shim.
func measureBaseline(ctx context.Context, o options, dir string, log *slog.Logger) (res *result, err error) {
	master := filepath.Join(dir, "rootfs")
	if err := busybox.WriteRootfs(master); err != nil {
		return nil, err
	}
	ids := make([]string, o.n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%03d", baselineIDPrefix, i)
		if err := writeBaselineBundle(filepath.Join(dir, ids[i]), ids[i], master); err != nil {
			return nil, err
		}
	}

	r := &runtime.Runc{Binary: o.runc, Root: filepath.Join(dir, "runc-root")}
	var started []string
	defer func() { err = errors.Join(err, deleteBaseline(context.WithoutCancel(ctx), r, started)) }()
	before, err := benchutil.MemAvailable()
	if err != nil {
		return nil, err
	}
	res = &result{}
	start := time.Now()
	for _, id := range ids {
		t0 := time.Now()
		err := runcRun(ctx, r, filepath.Join(dir, id), id)
		took := time.Since(t0)
		started = append(started, id) // a failed run may still leave state behind
		if err != nil {
			return nil, err
		}
		res.runs = append(res.runs, took)
	}
	res.total = time.Since(start)
	log.Info("runc containers running", "containers", len(ids), "took", res.total)

	if res.hostPerContainer, err = settledHostCost(ctx, before, o.n); err != nil {
		return nil, err
	}
	for _, id := range ids {
		pid, err := readPid(filepath.Join(dir, id, "init.pid"))
		if err != nil {
			return nil, err
		}
		m, err := readMemory(pid)
		if err != nil {
			return nil, fmt.Errorf("process of %s: %w", id, err)
		}
		res.inits = append(res.inits, m)
	}
	return res, nil
}

// writeBaselineBundle writes bundle: config.json and a rootfs linked from
// master.
func writeBaselineBundle(bundle, id, master string) error {
	rootfs := filepath.Join(bundle, "rootfs")
	if err := linkTree(master, rootfs); err != nil {
		return fmt.Errorf("rootfs for %s: %w", id, err)
	}
	spec, err := runtime.GenerateSpec(runtime.SpecOptions{
		ID:          id,
		Name:        id,
		Args:        workload,
		RootfsPath:  rootfs,
		CgroupsPath: baselineCgroupParent + "/" + id,
	})
	if err != nil {
		return err
	}
	return runtime.WriteBundle(bundle, spec)
}

// runcRun is `runc run --detach`: it returns once the container runs.
func runcRun(ctx context.Context, r *runtime.Runc, bundle, id string) error {
	outPath := filepath.Join(bundle, "runc.out")
	out, err := os.Create(outPath)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.CommandContext(ctx, r.Binary, "--root", r.Root, "run", "--detach",
		"--bundle", bundle, "--pid-file", filepath.Join(bundle, "init.pid"), id)
	// A file, not a pipe: the detached container inherits runc's stdio,
	// and a pipe would keep Run waiting until the container exits.
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("runc run %s: %w: %s", id, err, benchutil.Tail(outPath, runcErrTail))
	}
	return nil
}

// deleteBaseline removes the baseline's containers, then their cgroup
// parent.
func deleteBaseline(ctx context.Context, r *runtime.Runc, ids []string) error {
	var errs []error
	for _, id := range ids {
		errs = append(errs, r.Delete(ctx, id, true))
	}
	if len(ids) > 0 {
		errs = append(errs, runtime.RemoveCgroup(baselineCgroupParent))
	}
	return errors.Join(errs...)
}

// linkTree recreates the tree at src under dst: directories and symlinks
// anew, regular files as hard links.
func linkTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return os.MkdirAll(target, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		default:
			return os.Link(p, target)
		}
	})
}
