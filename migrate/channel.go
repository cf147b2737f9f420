package migrate

import (
	"context"
	"fmt"
)

// ChannelChecker is a Source that can check, before anything is frozen,
// prepared or sent, that it can open a data connection to the destination
// at address with its own credentials, and that the destination accepts
// them. agentclient.MigrationAgent is one: the source agent probes the
// destination's data channel (a TLS handshake both ways, where the agents
// serve TLS). A Source that is no ChannelChecker is not asked.
type ChannelChecker interface {
	// CheckChannel returns nil when a data connection from the source to
	// address gets through, or why it does not (an unreachable address,
	// certificates that one side refuses, TLS on one side only). It
	// moves no data and changes nothing on either side.
	CheckChannel(ctx context.Context, id, address string) error
}

// checkChannel asks a source that can (ChannelChecker) whether it can
// send to the destination, before the destination prepares anything: two
// agents that refuse each other's certificates (nodes of two clusters),
// or a destination address the source cannot reach, then fail the move
// while the container runs on, with nothing to undo.
func (d *driver) checkChannel(ctx context.Context) error {
	cc, ok := d.src.(ChannelChecker)
	if !ok {
		return nil
	}
	addr := d.dst.Address()
	if err := cc.CheckChannel(ctx, d.rec.ID, addr); err != nil {
		return fmt.Errorf("the source cannot open a data connection to the destination at %s: %w", addr, err)
	}
	return nil
}
