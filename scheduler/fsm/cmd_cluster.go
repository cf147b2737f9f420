package fsm

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

// InitCluster sets the cluster's settings. The first leader applies it
// once; a later leader may apply it again with the same CIDR, which
// changes nothing. Another CIDR is refused (ErrCIDRConflict): containers
// hold addresses of the first. Result value: the state.Config in force.
type InitCluster struct {
	ClusterCIDR netip.Prefix `json:"cluster_cidr"`
	At          time.Time    `json:"at"`
}

func (InitCluster) Type() CommandType { return TypeInitCluster }
func (c InitCluster) when() time.Time { return c.At }

func (c InitCluster) apply(tx *state.Txn) (any, error) {
	p := c.ClusterCIDR
	switch {
	case !p.IsValid():
		return nil, fmt.Errorf("cluster CIDR is not set: %w", ErrInvalid)
	case p.Addr().Is4In6():
		return nil, fmt.Errorf("cluster CIDR %s is an IPv4-mapped IPv6 network: %w; give it as IPv4", p, ErrInvalid)
	case p != p.Masked():
		return nil, fmt.Errorf("cluster CIDR %s has host bits set: %w; did you mean %s?", p, ErrInvalid, p.Masked())
	}
	if _, _, ok := state.UsableRange(p); !ok {
		return nil, fmt.Errorf("cluster CIDR %s leaves no address for containers: %w; use a larger network", p, ErrInvalid)
	}
	cur := tx.Config()
	if cur.ClusterCIDR.IsValid() {
		if cur.ClusterCIDR == p {
			return cur, nil
		}
		return nil, fmt.Errorf("cluster CIDR %s: %w (%s); containers hold addresses of it, so it cannot change: configure the scheduler with %s",
			p, ErrCIDRConflict, cur.ClusterCIDR, cur.ClusterCIDR)
	}
	cfg := cur
	cfg.ClusterCIDR = p
	if err := tx.SetConfig(cfg); err != nil {
		return nil, err
	}
	tx.Emit(state.EventClusterInitialized, "", "", "cluster CIDR "+p.String())
	return cfg, nil
}

// AppendAudit stores an operator action in the audit trail. Its Index is
// the raft index of the entry, whatever the command says. Result value:
// the stored *state.AuditRecord.
type AppendAudit struct {
	Record state.AuditRecord `json:"record"`
}

func (AppendAudit) Type() CommandType { return TypeAppendAudit }
func (c AppendAudit) when() time.Time { return c.Record.Time }

func (c AppendAudit) apply(tx *state.Txn) (any, error) {
	r := c.Record
	if r.Action == "" {
		return nil, fmt.Errorf("audit record names no action: %w", ErrInvalid)
	}
	r.Index = tx.WriteIndex()
	if err := tx.AppendAudit(&r); err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("%s (%s) %s", r.Who, r.Role, r.Action)
	if r.Target != "" {
		msg += " " + r.Target
	}
	tx.Emit(state.EventAudit, "", "", msg+": "+r.Outcome)
	return &r, nil
}
