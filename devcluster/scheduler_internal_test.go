package devcluster

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/godwit/godwit/internal/pki"
)

func TestSchedulerArgs(t *testing.T) {
	base := schedulerFlags{
		name: "dev-s1.sched", dataDir: "/w/s1/scheduler", listen: "10.0.0.2:7710",
		clusterCIDR: netip.MustParsePrefix("10.88.0.0/16"), bootstrapExpect: 3,
		gossipKeyFile: "/w/_tls/gossip.key",
	}
	tlsFiles := pki.Files{CA: "/t/ca.pem", Cert: "/t/cert.pem", Key: "/t/key.pem"}
	common := []string{"scheduler", "--name", "dev-s1.sched", "--data-dir", "/w/s1/scheduler", "--listen", "10.0.0.2:7710",
		"--bootstrap-expect", "3", "--cluster-cidr", "10.88.0.0/16", "--test-timings"}
	tests := []struct {
		name   string
		change func(*schedulerFlags)
		want   []string
	}{
		{
			name:   "TLS and the gossip key, no join",
			change: func(f *schedulerFlags) { f.tls = tlsFiles },
			want: append(slices.Clone(common), "--tls-ca", "/t/ca.pem", "--tls-cert", "/t/cert.pem", "--tls-key", "/t/key.pem",
				"--gossip-key-file", "/w/_tls/gossip.key"),
		},
		{
			// `godwit scheduler --insecure` refuses a gossip key.
			name:   "insecure drops the gossip key",
			change: func(*schedulerFlags) {},
			want:   append(slices.Clone(common), "--insecure"),
		},
		{
			name: "join is one comma-separated flag, extra flags last",
			change: func(f *schedulerFlags) {
				f.join = []string{"10.0.0.3:7712", "10.0.0.4:7712"}
				f.extra = []string{"--log-level", "debug"}
			},
			want: append(slices.Clone(common), "--join", "10.0.0.3:7712,10.0.0.4:7712", "--insecure", "--log-level", "debug"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := base
			tt.change(&f)
			if got := schedulerArgs(f); !slices.Equal(got, tt.want) {
				t.Errorf("schedulerArgs =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestSchedulerNamesNeverEqualNodeNames(t *testing.T) {
	// Agents and schedulers share one gossip pool, where names are
	// unique: a scheduler on host "a" must not take the name of an agent
	// on any host, "a" included.
	for _, host := range []string{"a", "a-sched", "s1", "n1-2"} {
		s := schedulerName("dev", host)
		for _, other := range []string{"a", "a-sched", "s1", "n1-2", "sched"} {
			if s == nodeName("dev", other) {
				t.Errorf("the scheduler on host %s is named %q, the node name of host %s", host, s, other)
			}
		}
		// The node name of host X is dev-X: no valid X gives s.
		if rest, ok := strings.CutPrefix(s, "dev-"); ok && validateHostName(rest) == nil {
			t.Errorf("scheduler name %q is the node name of host %q", s, rest)
		}
	}
}
