package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"

	"github.com/hashicorp/raft"
)

// RecoverCluster rewrites the raft state in cfg.DataDir so that the node
// restarts with servers as the whole cluster: the way out when a quorum
// is lost for good (see docs/raft.md). It runs offline: the scheduler
// must be stopped (its bolt file is locked otherwise, and this fails with
// ErrDataDirInUse). It replays the node's log into cfg.FSM, writes a
// snapshot carrying servers as the configuration and empties the log.
// Every entry this node holds counts as committed afterwards, including
// any that the lost quorum never committed. cfg.FSM is left unusable:
// give OpenRaft a fresh one. servers must include cfg.ID as a voter.
func RecoverCluster(cfg RaftConfig, servers []raft.Server) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := checkPeers(servers); err != nil {
		return err
	}
	if !slices.ContainsFunc(servers, func(s raft.Server) bool {
		return string(s.ID) == cfg.ID && s.Suffrage == raft.Voter
	}) {
		return fmt.Errorf("%w: the peers do not list this scheduler (%s) as a voter: add it, with the address it will listen on", ErrRaftConfig, cfg.ID)
	}
	logger := cfg.logger().With("raft_id", cfg.ID)
	stores, err := openRaftStores(cfg.DataDir, logger)
	if err != nil {
		return err
	}
	defer stores.bolt.Close()
	has, err := raft.HasExistingState(stores.bolt, stores.bolt, stores.snaps)
	if err != nil {
		return fmt.Errorf("check raft state in %s: %w", cfg.DataDir, err)
	}
	if !has {
		return fmt.Errorf("%w: %s holds no raft state to recover: is it the data dir of a scheduler that was in the cluster?", ErrRaftConfig, cfg.DataDir)
	}
	// The transport only encodes addresses into the snapshot: nothing
	// listens, so recovery works while the scheduler's port is taken.
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.ID))
	defer trans.Close()
	conf := raft.Configuration{Servers: slices.Clone(servers)}
	if err := raft.RecoverCluster(cfg.raftLibConfig(logger), cfg.FSM, stores.bolt, stores.bolt, stores.snaps, trans, conf); err != nil {
		return fmt.Errorf("recover raft in %s: %w", cfg.DataDir, err)
	}
	logger.Warn("raft configuration replaced by recovery", "servers", len(servers))
	return nil
}

// peerEntry is one server in a peers file.
type peerEntry struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Voter defaults to true: recovery is about voters.
	Voter *bool `json:"voter,omitempty"`
}

// ReadPeersFile reads the servers for RecoverCluster from a JSON file: a
// list of {"id": ..., "address": "host:port", "voter": true}; voter may
// be left out and defaults to true.
func ReadPeersFile(path string) ([]raft.Server, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read peers file: %w", err)
	}
	servers, err := ParsePeers(data)
	if err != nil {
		return nil, fmt.Errorf("peers file %s: %w", path, err)
	}
	return servers, nil
}

// ParsePeers parses the peers file format of ReadPeersFile.
func ParsePeers(data []byte) ([]raft.Server, error) {
	var entries []peerEntry
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, fmt.Errorf("%w: %w: write a JSON list of {\"id\", \"address\", \"voter\"}", ErrRaftConfig, err)
	}
	servers := make([]raft.Server, 0, len(entries))
	for _, e := range entries {
		s := raft.Server{ID: raft.ServerID(e.ID), Address: raft.ServerAddress(e.Address), Suffrage: raft.Voter}
		if e.Voter != nil && !*e.Voter {
			s.Suffrage = raft.Nonvoter
		}
		servers = append(servers, s)
	}
	if err := checkPeers(servers); err != nil {
		return nil, err
	}
	return servers, nil
}

// checkPeers refuses what raft would refuse, and says so in the peers
// file's terms: empty or duplicate IDs and addresses, an address that is
// not host:port, no voter.
func checkPeers(servers []raft.Server) error {
	if len(servers) == 0 {
		return fmt.Errorf("%w: no peers: list at least this scheduler", ErrRaftConfig)
	}
	ids := map[raft.ServerID]bool{}
	addrs := map[raft.ServerAddress]bool{}
	var voters int
	var errs []error
	for i, s := range servers {
		switch {
		case s.ID == "":
			errs = append(errs, fmt.Errorf("peer %d has no id", i+1))
		case ids[s.ID]:
			errs = append(errs, fmt.Errorf("peer id %q appears twice", s.ID))
		}
		ids[s.ID] = true
		if _, _, err := net.SplitHostPort(string(s.Address)); err != nil {
			errs = append(errs, fmt.Errorf("peer %q: address %q is not host:port", s.ID, s.Address))
		} else if addrs[s.Address] {
			errs = append(errs, fmt.Errorf("peer address %q appears twice", s.Address))
		}
		addrs[s.Address] = true
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters == 0 {
		errs = append(errs, errors.New("no peer is a voter"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrRaftConfig, errors.Join(errs...))
	}
	return nil
}
