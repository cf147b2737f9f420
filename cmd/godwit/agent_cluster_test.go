package main

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/agent/clusterlink"
)

func TestAgentClusterFlags(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "gossip.key")
	key := []byte("0123456789abcdef0123456789abcdef")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{Name: "n1", Advertise: "10.0.0.1:7701"} // as --listen
	tests := []struct {
		name     string
		flags    agentClusterFlags
		insecure bool
		// wantErr is part of the refusal; "" accepts.
		wantErr        string
		wantStandalone bool
		wantBind       string
		wantAdvertise  string
		wantInsecure   bool
		// listen and advertise are the agent's; default 10.0.0.1:7701.
		listen, advertise string
	}{
		{name: "no --join: standalone", wantStandalone: true},
		{name: "gossip flags without --join", flags: agentClusterFlags{gossipKeyFile: keyFile}, wantErr: "add --join"},
		{name: "no gossip key", flags: agentClusterFlags{join: []string{"10.0.0.9:7702"}}, wantErr: "give --gossip-key-file"},
		{name: "gossip key", flags: agentClusterFlags{join: []string{"10.0.0.9:7702"}, gossipKeyFile: keyFile}, wantBind: "10.0.0.1:7702"},
		{name: "insecure gossips in plaintext", flags: agentClusterFlags{join: []string{"10.0.0.9:7702"}}, insecure: true,
			wantBind: "10.0.0.1:7702", wantInsecure: true},
		{name: "a key file wins over --insecure", flags: agentClusterFlags{join: []string{"10.0.0.9:7702"}, gossipKeyFile: keyFile}, insecure: true,
			wantBind: "10.0.0.1:7702"},
		{name: "gossip listen given", flags: agentClusterFlags{join: []string{"10.0.0.9:7702"}, gossipListen: "10.0.0.1:9000"}, insecure: true,
			wantBind: "10.0.0.1:9000", wantInsecure: true},
		{name: "agents sharing a host gossip on their own ports", flags: agentClusterFlags{join: []string{"10.0.0.9:7702"}}, insecure: true,
			listen: "10.0.0.1:17701", advertise: "10.0.0.1:17701", wantBind: "10.0.0.1:17702", wantInsecure: true},
		{name: "advertised elsewhere", flags: agentClusterFlags{join: []string{"10.0.0.9:7702"}}, insecure: true,
			listen: "0.0.0.0:7701", advertise: "192.0.2.7:7701", wantBind: "0.0.0.0:7702", wantAdvertise: "192.0.2.7:7702", wantInsecure: true},
		{name: "missing key file", flags: agentClusterFlags{join: []string{"10.0.0.9:7702"}, gossipKeyFile: keyFile + ".nope"}, wantErr: "gossip key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			listen, cfg := "10.0.0.1:7701", cfg
			if tt.listen != "" {
				listen, cfg.Advertise = tt.listen, tt.advertise
			}
			cl, err := tt.flags.setup(cfg, listen, tt.insecure, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantStandalone {
				if cl != nil {
					t.Fatal("an agent without --join joins a cluster")
				}
				return
			}
			lc := cl.cfg
			if lc.Node != "n1" || lc.RPCAddr != cfg.Advertise || lc.GossipBind != tt.wantBind || lc.GossipAdvertise != tt.wantAdvertise ||
				lc.Insecure != tt.wantInsecure {
				t.Fatalf("link config = node %q rpc %q bind %q advertise %q insecure %v; want n1, %s, %s, %q, %v",
					lc.Node, lc.RPCAddr, lc.GossipBind, lc.GossipAdvertise, lc.Insecure, cfg.Advertise, tt.wantBind, tt.wantAdvertise, tt.wantInsecure)
			}
			if !tt.wantInsecure && string(lc.GossipKey) != string(key) {
				t.Fatalf("gossip key = %q, want the file's", lc.GossipKey)
			}
			if lc.ClientTLS != nil {
				t.Fatal("an --insecure agent dials schedulers with TLS")
			}
			// Until the link is up, the agent runs nothing.
			if err := cl.fence.Check(); !errors.Is(err, clusterlink.ErrLeaseExpired) || !strings.Contains(err.Error(), "node n1") {
				t.Fatalf("fence before the link = %v, want a refusal naming n1", err)
			}
		})
	}
}
