package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/clictx"
	"github.com/godwit/godwit/internal/pki"
)

// The CLI talks either to a cluster (any of its schedulers, the
// ClusterService) or to one agent directly (the AgentService, for
// one-node debugging). The target is, in this order:
//
//  1. --addr ADDR: the cluster; --agent ADDR: that agent (both: refused);
//  2. GODWIT_ADDR: the cluster; GODWIT_AGENT: that agent (both: refused);
//  3. the current context (internal/clictx): its cluster;
//  4. the agent at --agent's default address, as before clusters existed.
//
// TLS files are the --tls-* flags' (or GODWIT_TLS_*) when any is given,
// else the current context's, whatever the target: a dev cluster's agents
// trust the same CA as its schedulers.

// targetKind says which API a target serves.
type targetKind int

const (
	agentTarget targetKind = iota
	clusterTarget
)

// Where a target came from, as messages name it.
const (
	fromAddrFlag   = "--addr"
	fromAgentFlag  = "--agent"
	envClusterAddr = "GODWIT_ADDR"
	envAgentAddr   = "GODWIT_AGENT"
	fromDefault    = "the default: no --addr, --agent or current context"
	contextPrefix  = "context "
)

// target is what a command talks to, and with which TLS files.
type target struct {
	kind targetKind
	addr string
	// from says where addr came from: fromAddrFlag, "context dev", ...;
	// empty for an agent named by a command's own flag (migrate's
	// --from-agent), which messages need not explain.
	from string
	// tls are the CLI's TLS files; zero for plaintext.
	tls pki.Files
	// tlsContext names the context the TLS files came from; empty when
	// they came from flags or the environment, or there are none.
	tlsContext string
}

// targetOnce holds a command's target, resolved on first use.
type targetOnce struct {
	once sync.Once
	t    target
	err  error
}

// targetInputs is what resolveTarget decides from.
type targetInputs struct {
	// addrGiven and agentGiven: --addr or --agent was on the command
	// line; addr and agent are the flags' values.
	addrGiven, agentGiven bool
	addr, agent           string
	// envAddr and envAgent are GODWIT_ADDR and GODWIT_AGENT.
	envAddr, envAgent string
	// tls are the files of the --tls-* flags or GODWIT_TLS_*.
	tls pki.Files
	// contexts loads the contexts file; called only when needed.
	contexts func() (*clictx.File, error)
}

// resolveTarget picks the target by the order above.
func resolveTarget(in targetInputs) (target, error) {
	var t target
	switch {
	case in.addrGiven && in.agentGiven:
		return t, errors.New("--addr and --agent both given: --addr talks to the cluster, --agent to one agent; give one")
	case in.addrGiven:
		t = target{kind: clusterTarget, addr: in.addr, from: fromAddrFlag}
	case in.agentGiven:
		t = target{kind: agentTarget, addr: in.agent, from: fromAgentFlag}
	case in.envAddr != "" && in.envAgent != "":
		return t, errors.New("GODWIT_ADDR and GODWIT_AGENT are both set: unset one, or give --addr (the cluster) or --agent (one agent)")
	case in.envAddr != "":
		t = target{kind: clusterTarget, addr: in.envAddr, from: envClusterAddr}
	case in.envAgent != "":
		t = target{kind: agentTarget, addr: in.envAgent, from: envAgentAddr}
	}
	if t.addr == "" && t.from != "" {
		return t, fmt.Errorf("%s is empty: give the address as HOST:PORT", t.from)
	}
	if t.addr == "" || in.tls.IsZero() {
		f, err := in.contexts()
		if err != nil {
			if t.addr == "" {
				return t, fmt.Errorf("%w; or give --addr (the cluster) or --agent (one agent)", err)
			}
			return t, fmt.Errorf("%w; or give --tls-ca, --tls-cert and --tls-key", err)
		}
		c, ok := f.Current()
		switch {
		case ok && t.addr == "":
			t = target{kind: clusterTarget, addr: c.Addr, from: contextPrefix + c.Name}
		case !ok && f.CurrentName != "" && t.addr == "":
			return t, fmt.Errorf("the current context %q is not in %s: pick one with `godwit context use NAME` (see `godwit context ls`)",
				f.CurrentName, f.Path)
		}
		if ok && in.tls.IsZero() && !c.Insecure {
			t.tls, t.tlsContext = c.TLS, c.Name
		}
	}
	if t.addr == "" {
		t = target{kind: agentTarget, addr: in.agent, from: fromDefault}
	}
	if !in.tls.IsZero() {
		t.tls = in.tls
	}
	return t, nil
}

// addClusterFlags adds the global --addr, and records the command that
// runs so that messages can name it.
func addClusterFlags(root *cobra.Command, o *globalOptions) {
	root.PersistentFlags().StringVar(&o.clusterAddr, "addr", "",
		"address of a scheduler of the cluster to talk to, or several separated by commas, tried in turn when one cannot be reached (env "+
			envClusterAddr+"); default: the current context's (see `godwit context`)")
	o.flags = root.PersistentFlags()
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		o.command = cmd
		return nil
	}
}

// target resolves the command's target once.
func (o *globalOptions) target() (target, error) {
	o.resolved.once.Do(func() {
		in := targetInputs{addr: o.clusterAddr, agent: o.agentAddr, tls: o.tlsFiles, contexts: clictx.Load}
		if o.flags == nil {
			// A copy for one agent named by a command's own flag.
			in.agentGiven = true
		} else {
			in.addrGiven, in.agentGiven = o.flags.Changed("addr"), o.flags.Changed("agent")
			in.envAddr, in.envAgent = os.Getenv(envClusterAddr), os.Getenv(envAgentAddr)
		}
		o.resolved.t, o.resolved.err = resolveTarget(in)
		if o.flags == nil {
			o.resolved.t.from = ""
		}
	})
	return o.resolved.t, o.resolved.err
}

// isCluster reports whether the command talks to a cluster. An error
// resolving the target is false here: the agent path reports it.
func (o *globalOptions) isCluster() bool {
	t, err := o.target()
	return err == nil && t.kind == clusterTarget
}

// fromNote is " (from SOURCE)" for messages, or nothing.
func (t target) fromNote() string {
	if t.from == "" {
		return ""
	}
	return " (from " + t.from + ")"
}

// commandName is the running command as messages name it.
func (o *globalOptions) commandName() string {
	if o.command == nil {
		return "this command"
	}
	return "`" + o.command.CommandPath() + "`"
}

// agentOnlyHints say, for commands that talk to one agent, what to do
// in a cluster instead; keyed by command path below the root, the nearest
// ancestor's hint serving its subcommands.
var agentOnlyHints = map[string]string{
	"checkpoint": "cluster checkpoints come with migrations",
	"restore":    "cluster checkpoints come with migrations",
	"exec":       "the agent of the container's node: `godwit inspect NAME` names the node, `godwit node inspect NODE` gives its address",
	"image rm":   "images are removed on each node's agent",
	"node info":  "for a node of the cluster, `godwit node inspect NAME` shows what the cluster knows",
}

// agentOnlyError refuses a command that talks to one agent while the
// target is a cluster.
func (o *globalOptions) agentOnlyError(t target) error {
	hint := ""
	for c := o.command; c != nil && c.HasParent(); c = c.Parent() {
		rel := c.CommandPath()[len(c.Root().Name())+1:]
		if h, ok := agentOnlyHints[rel]; ok {
			hint = " (" + h + ")"
			break
		}
	}
	return fmt.Errorf("%s talks to one agent: give --agent ADDR%s; the target now is the cluster at %s%s",
		o.commandName(), hint, t.addr, t.fromNote())
}

// clusterOnlyError refuses a command that talks to the cluster while the
// target is one agent.
func (o *globalOptions) clusterOnlyError(t target) error {
	return fmt.Errorf("%s talks to the cluster: give --addr ADDR (or set %s), or make a context current with `godwit context use NAME`; the target now is the agent at %s%s",
		o.commandName(), envClusterAddr, t.addr, t.fromNote())
}

// clusterFlagsError refuses flags that only a cluster understands while
// the target is one agent.
func clusterFlagsError(t target, flags []string) error {
	verb := "asks"
	if len(flags) > 1 {
		verb = "ask"
	}
	return fmt.Errorf("%s %s for the cluster: give --addr ADDR (or set %s), or make a context current with `godwit context use NAME`; the target now is the agent at %s%s",
		strings.Join(flags, ", "), verb, envClusterAddr, t.addr, t.fromNote())
}

// refuseInAgentMode fails when the target is one agent, which does not
// understand flag; or when the target cannot be resolved.
func (o *globalOptions) refuseInAgentMode(flag string) error {
	t, err := o.target()
	if err != nil {
		return err
	}
	if t.kind == agentTarget {
		return clusterFlagsError(t, []string{flag})
	}
	return nil
}

// requireAgent fails unless the target is one agent.
func (o *globalOptions) requireAgent() error {
	t, err := o.target()
	if err != nil {
		return err
	}
	if t.kind != agentTarget {
		return o.agentOnlyError(t)
	}
	return nil
}

// tlsFilesNote tells where the TLS files came from when a context gave
// them, for messages that otherwise name the --tls-* flags.
func (t target) tlsFilesNote() string {
	if t.tlsContext == "" {
		return ""
	}
	return fmt.Sprintf(" (the TLS files came from context %s: `godwit context show %s`; --tls-* flags override them)", t.tlsContext, t.tlsContext)
}
