package migrate

import "context"

// Container is what the driver tells the destination about the container
// it is to receive, so that it can prepare before any memory moves.
type Container struct {
	Name string
	ID   string
	// Image and ImageLayers are what the container's root filesystem is
	// built from; the destination must have every layer.
	Image       string
	ImageLayers []string
	// IP is the container's address, which it keeps.
	IP string
	// RootfsFormats are the formats in which the source can sync the
	// container's writable layer while it runs (snapshot.SyncFormat
	// names), preferred first; empty when it cannot, and the checkpoint
	// then carries the whole writable layer.
	RootfsFormats []string
	// Memory is the memory the container uses on the source, in bytes
	// (its cgroup's, less inactive file pages): what its restore writes.
	// 0: unknown.
	Memory int64
}

// Prepared is the destination's answer to Prepare: what it needs from the
// source before the container is frozen.
type Prepared struct {
	// MissingLayers are the layers of the container's image (digests) the
	// destination lacks: the driver has the source send them first
	// (SendLayers, ReceiveLayers).
	MissingLayers []string
	// MissingImage says the destination lacks the image's record (its
	// name and config) even where it has every layer: the source sends it
	// with MissingLayers.
	MissingImage bool
	// RootfsFormat is the format, one of the source's RootfsFormats, in
	// which the destination takes the writable layer's sync
	// (SyncRootfs, ReceiveRootfs); empty: no sync.
	RootfsFormat string
	// TransferChecksums are the checksums the destination takes on the
	// checkpoint's transfer (Receive); sha256, which every agent takes,
	// may go unsaid. The driver has the source use ChecksumCRC32C when
	// it is among them (Send).
	TransferChecksums []string
}

// ChecksumCRC32C names the transfer checksum that costs a fraction of
// sha256 inside the downtime, for a destination that restores the
// checkpoint moments later (see agent/checkpoint/bundle's transfer
// framing). The data channel's TLS authenticates the bytes either way.
const ChecksumCRC32C = "crc32c"

// Source is the source agent as the driver of a migration sees it. Every
// call is idempotent by migration ID: repeating a call that succeeded does
// nothing more and succeeds again.
type Source interface {
	// Address is the source agent's address, where the destination fetches
	// a post-copy migration's pages (ServePages).
	Address() string
	// Describe returns the container to move, for Prepare; s is the
	// migration's strategy, by which the source readies its dump.
	Describe(ctx context.Context, id, container string, s Strategy) (Container, error)
	// Dump freezes and dumps the container and leaves it stopped: the
	// downtime starts here. Where the memory pages go depends on
	// opts.Strategy (see DumpOptions); what the source keeps until the
	// commit is enough to run the container again from where it was.
	// Stream and PostCopy keep the container itself, frozen with its
	// network cut, since its memory is not on the source's disk.
	Dump(ctx context.Context, id string, opts DumpOptions) error
	// ServePages (PostCopy) takes the destination's data connection that
	// presents token and serves the dumped container's memory pages on
	// it. It returns once connected; the source agent then serves every
	// page whatever becomes of the call, and Finish waits until all are
	// served. A Restore that did not need the pages leaves it waiting
	// until its ctx ends.
	ServePages(ctx context.Context, id, token string) error
	// Send streams the dumped checkpoint to the destination's data
	// connection at address with token, reporting bytes sent; checksum
	// is the transfer checksum, one the destination takes
	// (Prepared.TransferChecksums), "" for sha256.
	Send(ctx context.Context, id, address, token, checksum string, progress func(done, total int64)) error
	// SendLayers streams the record of the container's image and its
	// layers named in layers (digests) to the destination's data
	// connection at address with token, reporting bytes sent.
	SendLayers(ctx context.Context, id string, layers []string, address, token string, progress func(done, total int64)) error
	// SyncRootfs streams the container's writable layer in format (one of
	// Container.RootfsFormats) to the destination's data connection at
	// address with token while the container runs, and remembers what it
	// sent: Dump's checkpoint then carries only what changed since.
	// Repeating it sends the whole layer again.
	SyncRootfs(ctx context.Context, id, format, address, token string, progress func(done, total int64)) error
	// Finish drops the source's stopped copy and its images once the
	// destination runs the container (after the commit), and routes the
	// container's IP via the destination agent's host (destination is
	// that agent's address), so that clients still sending to the source
	// are forwarded.
	Finish(ctx context.Context, id, destination string) error
	// Resume runs the source's copy again from its images, after the
	// destination acknowledged an abort. The driver also calls it after
	// an abort in PhaseSync that left pre-dump images (pre-copy), when the
	// container still runs: the source then drops them and records the
	// abort.
	Resume(ctx context.Context, id string) error
	// PreDump copies the container's memory while it runs, as pre-copy
	// round round (1 first: the whole memory; each later round only what
	// the container dirtied since the one before), into images the
	// migration keeps, and reports what it copied (Sent and Transfer
	// left zero). Rounds come in order; repeating one that succeeded
	// reports it again. It needs the kernel's soft-dirty tracking.
	PreDump(ctx context.Context, id string, round int) (PreCopyIteration, error)
	// SendPreDump streams pre-copy round round's images to the
	// destination's data connection at address with token, reporting
	// bytes sent, as Send does for the checkpoint.
	SendPreDump(ctx context.Context, id string, round int, address, token string, progress func(done, total int64)) error
}

// Destination is the destination agent as the driver sees it; calls are
// idempotent by migration ID, like Source's.
type Destination interface {
	// Address is where the source sends the checkpoint (the agent's
	// address, which also serves data connections).
	Address() string
	// Prepare checks that the destination can take the container (image,
	// IP), records the migration and says what it still needs.
	Prepare(ctx context.Context, id string, c Container, s Strategy) (Prepared, error)
	// ReceiveLayers takes the image the source sends with token (the
	// MissingLayers of Prepare), checking every layer against its digest
	// before it records the image; once it has the image, a repeated call
	// takes what is sent and drops it.
	ReceiveLayers(ctx context.Context, id, token string) error
	// ReceiveRootfs takes the writable layer the source syncs with token
	// into a new snapshot for the container, which Restore then uses with
	// the changes the checkpoint carries; a repeated call replaces what
	// an earlier one received.
	ReceiveRootfs(ctx context.Context, id, token string) error
	// Receive takes the checkpoint the source sends with token, checking
	// every digest; it returns once all of it is in.
	Receive(ctx context.Context, id, token string) error
	// ReceivePages (Stream) runs a CRIU page server fed by the data
	// connection that presents token, where the source's Dump sends the
	// memory pages; it returns once the dump's pages are all in, and
	// Restore then completes the checkpoint with them. Once it has them,
	// a repeated call returns at once.
	ReceivePages(ctx context.Context, id, token string) error
	// ReceivePreDump takes pre-copy round round's images the source sends
	// with token, checking every digest, as Receive does; a round it holds
	// already is taken again and dropped.
	ReceivePreDump(ctx context.Context, id string, round int, token string) error
	// Restore restores the container held stopped: it does not run until
	// Commit.
	Restore(ctx context.Context, id string, opts RestoreOptions) error
	// Commit runs the restored container. After a Commit, Abort fails
	// with ErrCommitted.
	Commit(ctx context.Context, id string) error
	// Abort discards everything the destination holds for the migration
	// and acknowledges; after it, Commit fails with ErrAborted.
	Abort(ctx context.Context, id, why string) error
}

// DumpOptions say how Source.Dump dumps the container. Other strategies
// add their fields here.
type DumpOptions struct {
	// Strategy is the migration's strategy, never Auto: StopCopy dumps
	// into the migration's checkpoint on the source's disk.
	Strategy Strategy
	// PreDumps is how many pre-copy rounds the source pre-dumped
	// (PreCopy): the final dump takes the last as its parent and writes
	// only the pages dirtied since. Zero: none.
	PreDumps int
	// Pages (Stream) is the destination's data connection that takes the
	// memory pages (its ReceivePages): they never touch the source's
	// disk.
	Pages DataLink
}

// DataLink names one data connection between the two agents: the agent
// at Address takes it from the other when it presents Token.
type DataLink struct {
	Address string
	Token   string
}

// RestoreOptions say how Destination.Restore restores the container.
type RestoreOptions struct {
	// Strategy is the migration's strategy, never Auto.
	Strategy Strategy
	// PreDumps is how many pre-copy rounds the destination received
	// (PreCopy): the checkpoint's pages not in it are in those rounds.
	PreDumps int
	// Pages (PostCopy) is the source's data connection that serves the
	// memory pages the restored container faults in (its ServePages).
	Pages DataLink
}
