package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// AnnotationCRIUConfig is the bundle annotation naming a CRIU
// configuration file, which runc hands to CRIU on every checkpoint and
// restore of the container. It is how godwit passes CRIU options that runc
// has no flag for.
const AnnotationCRIUConfig = "org.criu.config"

// CRIUConfig is what godwit writes into that file.
type CRIUConfig struct {
	// LeaveStopped restores the container's tasks stopped (state T)
	// instead of running: a migration's destination holds its copy so
	// until the move is committed, then Resume runs it from where it was.
	// CRIU applies the option to dumps too, so the annotation must be
	// removed (SetCRIUConfig with "") before the container is checkpointed
	// again.
	LeaveStopped bool
	// LazyPages restores memory lazily from a lazy-pages daemon
	// (StartLazyPages), which listens in WorkDir: post-copy. runc's
	// --work-path cannot name the daemon's directory, since the agent
	// clears its own restore work directory before each restore.
	LazyPages bool
	// WorkDir, when set, is CRIU's work directory for the restore (its log
	// lands there too).
	WorkDir string
}

// Write writes c as a CRIU configuration file (one option per line) to
// path, privately.
func (c CRIUConfig) Write(path string) error {
	var b strings.Builder
	b.WriteString("# written by godwit; read by CRIU through runc's org.criu.config annotation\n")
	if c.LeaveStopped {
		b.WriteString("leave-stopped\n")
	}
	if c.LazyPages {
		b.WriteString("lazy-pages\n")
	}
	if c.WorkDir != "" {
		if strings.ContainsAny(c.WorkDir, " \t\n\"'\\") {
			return fmt.Errorf("write CRIU configuration %s: work directory %q: CRIU's configuration cannot hold blanks or quotes", path, c.WorkDir)
		}
		b.WriteString("work-dir " + c.WorkDir + "\n")
	}
	if err := writeFileAtomic(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write CRIU configuration %s: %w", path, err)
	}
	return nil
}

// SetCRIUConfig points s at the CRIU configuration file path, or, with
// path "", removes the annotation.
func SetCRIUConfig(s *specs.Spec, path string) {
	if path == "" {
		delete(s.Annotations, AnnotationCRIUConfig)
		return
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[AnnotationCRIUConfig] = path
}

// Resume runs a container whose tasks a restore left stopped
// (CRIUConfig.LeaveStopped): every process of the container gets SIGCONT
// and goes on from where it was dumped. The processes are listed with
// `runc ps` and signalled one by one: `runc kill --all` reaches only the
// init of a container with its own PID namespace, which left its children
// stopped.
func (r *Runc) Resume(ctx context.Context, id string) error {
	out, err := r.run(ctx, "ps", id, "ps", "--format", "json", id)
	if err != nil {
		return err
	}
	var pids []int
	if err := json.Unmarshal(out, &pids); err != nil {
		return &RuncError{Op: "ps", ID: id, Message: fmt.Sprintf("unreadable process list %q: %v", out, err)}
	}
	if len(pids) == 0 {
		return &RuncError{Op: "resume", ID: id, Message: "the container has no processes"}
	}
	var errs []error
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("pid %d: %w", pid, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &RuncError{Op: "resume", ID: id, Message: err.Error(), Err: err}
	}
	return nil
}
