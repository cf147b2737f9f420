package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/agent/clusterlink"
	"github.com/godwit/godwit/internal/pki"
)

// agentGossipPortOffset puts the agent's gossip, unless given, on its
// API's host and the next port (7702 beside the default 7701), so that
// agents sharing a host with different API ports do not collide.
const agentGossipPortOffset = 1

// agentClusterFlags are the flags that put an agent in a cluster; without
// --join the agent is standalone.
type agentClusterFlags struct {
	join            []string
	gossipListen    string
	gossipAdvertise string
	gossipKeyFile   string
}

func (c *agentClusterFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringSliceVar(&c.join, "join", nil, "gossip addresses of any schedulers or agents of the cluster, comma-separated: joins the cluster (without it the agent is standalone)")
	f.StringVar(&c.gossipListen, "gossip-listen", "", "IP:port the agent gossips on, UDP and TCP (default: the --listen port + 1)")
	f.StringVar(&c.gossipAdvertise, "gossip-advertise", "", "IP[:port] the other members reach this agent's gossip at (default: the --advertise port + 1 when --advertise is given)")
	f.StringVar(&c.gossipKeyFile, "gossip-key-file", "", "the cluster's gossip key (base64, mode 0600: godwit tls gossip-key create); without it gossip is plaintext, with --insecure only")
}

// agentCluster is an agent's membership of the cluster: the link to the
// schedulers, and the lease gate the agent checks before it runs
// anything.
type agentCluster struct {
	cfg   clusterlink.Config
	fence *linkFence
	link  *clusterlink.Link
}

// setup checks the cluster flags and prepares the link; nil without
// --join. cfg is the agent's configuration (name, advertise address),
// listen its API address, id its TLS identity (nil: --insecure).
func (c *agentClusterFlags) setup(cfg agent.Config, listen string, insecure bool, id *pki.Identity) (*agentCluster, error) {
	if len(c.join) == 0 {
		if c.gossipListen != "" || c.gossipAdvertise != "" || c.gossipKeyFile != "" {
			return nil, errors.New("--gossip-listen, --gossip-advertise and --gossip-key-file are for an agent in a cluster: add --join with a member's gossip address, or drop them")
		}
		return nil, nil
	}
	lc := clusterlink.Config{
		Node:            cfg.Name,
		Join:            c.join,
		GossipBind:      c.gossipListen,
		GossipAdvertise: c.gossipAdvertise,
		RPCAddr:         cfg.Advertise,
	}
	var err error
	if lc.GossipBind == "" {
		if lc.GossipBind, err = portOffset(listen, agentGossipPortOffset); err != nil {
			return nil, fmt.Errorf("--listen: %w: give --gossip-listen IP:PORT", err)
		}
	}
	if lc.GossipAdvertise == "" && cfg.Advertise != listen {
		if lc.GossipAdvertise, err = portOffset(cfg.Advertise, agentGossipPortOffset); err != nil {
			return nil, fmt.Errorf("--advertise: %w: give --gossip-advertise IP:PORT", err)
		}
	}
	switch {
	case c.gossipKeyFile != "":
		key, err := pki.LoadGossipKey(c.gossipKeyFile)
		if err != nil {
			return nil, err
		}
		lc.GossipKey = key
	case insecure:
		lc.Insecure = true
	default:
		return nil, errors.New("an agent in a cluster gossips encrypted: give --gossip-key-file (the cluster's key: godwit tls gossip-key create FILE), or --insecure for plaintext on one host")
	}
	if id != nil {
		// The agent dials schedulers with its node certificate and
		// accepts only a scheduler's certificate naming the address it
		// dialled.
		lc.ClientTLS = pki.RequirePeerRole(id.ClientConfig(), pki.RoleScheduler)
	}
	return &agentCluster{cfg: lc, fence: &linkFence{node: cfg.Name}}, nil
}

// start starts the link once the agent serves its API: the scheduler
// calls it as soon as it has registered.
func (c *agentCluster) start(ctx context.Context, a *agent.Agent, log *slog.Logger) error {
	c.cfg.Facts = a.RegisterFacts
	c.cfg.Heartbeat = a.HeartbeatReport
	c.cfg.Logger = log
	link, err := clusterlink.Start(ctx, c.cfg)
	if err != nil {
		return fmt.Errorf("join the cluster: %w", err)
	}
	c.link = link
	c.fence.link.Store(link)
	log.Info("joining the cluster", "join", c.cfg.Join, "gossip", c.cfg.GossipBind, "encrypted", !c.cfg.Insecure, "tls", c.cfg.ClientTLS != nil)
	return nil
}

// stop leaves the cluster's gossip pool; the scheduler sees the node
// leave. Its containers keep running.
func (c *agentCluster) stop() {
	if c.link != nil {
		c.link.Stop()
	}
}

// linkFence is the agent's lease gate (agent.Fence): the agent is made
// before its link, which needs it for its facts, so the gate refuses
// until the link is there.
type linkFence struct {
	node string
	link atomic.Pointer[clusterlink.Link]
}

// Placement is the link's, once it is there; before, the node has not
// registered (epoch 0).
func (f *linkFence) Placement(id string) (generation uint64, placed bool, epoch uint64) {
	if l := f.link.Load(); l != nil {
		return l.Placement(id)
	}
	return 0, false, 0
}

func (f *linkFence) Check() error {
	if l := f.link.Load(); l != nil {
		return l.Check()
	}
	return fmt.Errorf("node %s has not joined the cluster yet: it starts, resumes and commits nothing until it has registered: %w", f.node, clusterlink.ErrLeaseExpired)
}
