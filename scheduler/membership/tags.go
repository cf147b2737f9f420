package membership

import (
	"encoding/json"
	"fmt"
	"maps"

	"github.com/hashicorp/memberlist"
)

// Tags are what a member tells the rest of the pool about itself. They
// travel as memberlist node metadata, which is at most
// memberlist.MetaMaxSize (512) bytes once encoded with the member's role:
// keep them to addresses and small words.
type Tags struct {
	// RPCAddr is the member's gRPC address, host:port.
	RPCAddr string
	// RaftAddr is a scheduler's raft address, host:port; empty on agents.
	RaftAddr string
	// Expect is a scheduler's --bootstrap-expect: how many schedulers
	// must have met before the first raft configuration is bootstrapped;
	// 0 on agents.
	Expect int
	// Extra holds small key/value pairs for later uses, without a change
	// of the wire format.
	Extra map[string]string
}

// Equal reports whether t and o say the same.
func (t Tags) Equal(o Tags) bool {
	return t.RPCAddr == o.RPCAddr && t.RaftAddr == o.RaftAddr && t.Expect == o.Expect &&
		maps.Equal(t.Extra, o.Extra)
}

func (t Tags) clone() Tags {
	t.Extra = maps.Clone(t.Extra)
	return t
}

// metaVersion is the wire format of node metadata. Decoders ignore fields
// they do not know, so adding a field keeps the version; a change that
// old members would misread bumps it.
const metaVersion = 1

// wireMeta is node metadata on the wire: JSON with short keys, to leave
// room under the 512-byte limit.
type wireMeta struct {
	Version  int               `json:"v"`
	Role     Role              `json:"r"`
	RPCAddr  string            `json:"rpc,omitempty"`
	RaftAddr string            `json:"raft,omitempty"`
	Expect   int               `json:"e,omitempty"`
	Extra    map[string]string `json:"x,omitempty"`
	// Leaving says the member is about to leave: memberlist reports a
	// member that left and one that failed alike (the state it hands its
	// event delegate is never set), so Leave first gossips this flag, and
	// a departure with it is a leave.
	Leaving bool `json:"l,omitempty"`
}

// encodeMeta encodes a member's role, tags and leaving flag, or fails
// with ErrMetaTooLarge when they exceed memberlist's limit, with the
// flag set or not: tags that fit must still fit when the member leaves.
func encodeMeta(role Role, t Tags, leaving bool) ([]byte, error) {
	w := wireMeta{
		Version: metaVersion, Role: role,
		RPCAddr: t.RPCAddr, RaftAddr: t.RaftAddr, Expect: t.Expect, Extra: t.Extra,
		Leaving: true,
	}
	longest, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode gossip tags: %w", err)
	}
	if len(longest) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: tags encode to %d bytes, gossip carries at most %d: shorten the addresses or drop extra tags",
			ErrMetaTooLarge, len(longest), memberlist.MetaMaxSize)
	}
	if leaving {
		return longest, nil
	}
	w.Leaving = false
	return json.Marshal(w)
}

// decodeMeta decodes another member's metadata.
func decodeMeta(b []byte) (role Role, t Tags, leaving bool, err error) {
	if len(b) == 0 {
		return "", Tags{}, false, fmt.Errorf("%w: the member sent no metadata (not a godwit member?)", errBadMeta)
	}
	var w wireMeta
	if err := json.Unmarshal(b, &w); err != nil {
		return "", Tags{}, false, fmt.Errorf("%w: %w", errBadMeta, err)
	}
	if w.Version < 1 || w.Version > metaVersion {
		return "", Tags{}, false, fmt.Errorf("%w: format version %d, this godwit reads 1 to %d: run the same godwit version on every member",
			errBadMeta, w.Version, metaVersion)
	}
	return w.Role, Tags{RPCAddr: w.RPCAddr, RaftAddr: w.RaftAddr, Expect: w.Expect, Extra: w.Extra}, w.Leaving, nil
}
