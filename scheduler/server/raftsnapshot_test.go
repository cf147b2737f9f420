package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func TestRaftSnapshotSaveRestoreRoundTrip(t *testing.T) {
	c := newCluster(t, 3, FastRaftTiming())
	c.set("a", "1")
	c.set("b", "2")
	ldr := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()

	var saved bytes.Buffer
	info, err := ldr.node.SaveSnapshot(ctx, &saved)
	if err != nil {
		t.Fatalf("save: %v", err)
	}
	if info.Index == 0 || info.Term == 0 || info.Size == 0 || len(info.Servers) != 3 {
		t.Errorf("snapshot info %+v: want an index, a term, a size and the 3 servers", info)
	}
	// Nothing applied since: the snapshot on disk is saved again.
	var again bytes.Buffer
	if _, err := ldr.node.SaveSnapshot(ctx, &again); err != nil {
		t.Fatalf("save with nothing new: %v", err)
	}

	c.set("a", "9")
	c.set("c", "3")
	restoreOnLeader(t, c, saved.Bytes())
	for _, tn := range c.nodes {
		waitFor(t, clusterWait, tn.cfg.ID+" to hold the restored state", func() bool {
			a, _ := tn.fsm.get("a")
			_, hasC := tn.fsm.get("c")
			return a == "1" && !hasC
		})
		if b, _ := tn.fsm.get("b"); b != "2" {
			t.Errorf("%s: b=%q after restore, want 2", tn.cfg.ID, b)
		}
	}
	c.set("d", "4")
	for _, tn := range c.nodes {
		waitValue(t, tn, "d", "4")
	}

	// The second save, taken from the snapshot on disk, restores too.
	ldr = restoreOnLeader(t, c, again.Bytes())
	if _, ok := ldr.fsm.get("d"); ok {
		t.Error("restoring the second save kept d, written after it")
	}
}

// restoreOnLeader restores data through the cluster's leader and returns
// it. With the fast timings a loaded machine may change leaders on its
// own: a restore the leadership change cut is made again on the new
// leader (restoring the same snapshot twice is harmless).
func restoreOnLeader(t *testing.T, c *testCluster, data []byte) *testNode {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ldr := c.leader()
		ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
		err := ldr.node.RestoreSnapshot(ctx, bytes.NewReader(data))
		cancel()
		if err == nil {
			return ldr
		}
		if attempt == 3 || !(errors.Is(err, ErrLeadershipLost) || errors.Is(err, ErrNotLeader)) {
			t.Fatalf("restore: %v", err)
		}
		t.Logf("restore: %v; again on the new leader", err)
	}
}

func TestRaftSnapshotRestoreRefusesBrokenFiles(t *testing.T) {
	c := newCluster(t, 1, FastRaftTiming())
	c.set("a", "1")
	ldr := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	var buf bytes.Buffer
	info, err := ldr.node.SaveSnapshot(ctx, &buf)
	if err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	c.set("a", "current")
	headerEnd := len(good) - int(info.Size) - 32
	flip := func(at int) []byte {
		b := bytes.Clone(good)
		b[at] ^= 0xff
		return b
	}
	format2 := bytes.Clone(good)
	binary.BigEndian.PutUint32(format2[len(snapshotMagic):], 2)

	tests := []struct {
		name string
		file []byte
		says string
	}{
		{"empty", nil, "too short"},
		{"foreign file", []byte(strings.Repeat("not a snapshot at all\n", 10)), "not a godwit raft snapshot"},
		{"newer format", format2, "format 2"},
		{"cut in the header", good[:headerEnd-5], "truncated in its header"},
		{"cut in the state", good[:headerEnd+int(info.Size)/2], "truncated"},
		{"checksum missing", good[:len(good)-32], "checksum is missing"},
		{"checksum cut short", good[:len(good)-1], "checksum is missing"},
		{"byte flipped in the state", flip(headerEnd + 1), "checksum mismatch"},
		{"byte flipped in the checksum", flip(len(good) - 1), "checksum mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ldr.node.RestoreSnapshot(ctx, bytes.NewReader(tt.file))
			if !errors.Is(err, ErrSnapshotInvalid) || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("restore: %v, want ErrSnapshotInvalid saying %q", err, tt.says)
			}
			if a, _ := ldr.fsm.get("a"); a != "current" {
				t.Errorf("a refused file changed the state: a=%q", a)
			}
		})
	}
	// After all those refusals the cluster still writes.
	c.set("b", "2")
}

func TestRaftSnapshotRestoreOnAFollowerIsRefused(t *testing.T) {
	c := newCluster(t, 3, FastRaftTiming())
	c.set("a", "1")
	ldr := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	var buf bytes.Buffer
	if _, err := ldr.node.SaveSnapshot(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	err := c.others(ldr)[0].node.RestoreSnapshot(ctx, &buf)
	var nle *NotLeaderError
	if !errors.As(err, &nle) || nle.LeaderID != ldr.cfg.ID {
		t.Fatalf("restore on a follower: %v, want a *NotLeaderError naming %s", err, ldr.cfg.ID)
	}
}
