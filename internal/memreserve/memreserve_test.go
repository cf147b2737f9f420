package memreserve

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/godwit/godwit/internal/testutil"
)

func rssAnon(t *testing.T) int64 { return testutil.StatusBytes(t, 0, "RssAnon") }

func TestAReserveIsResidentUntilClosed(t *testing.T) {
	const n = 64 << 20
	// Slack for what the Go runtime maps meanwhile.
	const slack = 8 << 20
	before := rssAnon(t)
	r, err := Take(n)
	if err != nil {
		t.Fatal(err)
	}
	held := rssAnon(t)
	if got := held - before; got < n-slack {
		t.Fatalf("resident memory grew by %d MiB after Take(%d MiB), want the whole reserve faulted in", got>>20, n>>20)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := held - rssAnon(t); got < n-slack {
		t.Errorf("resident memory fell by %d MiB after Close, want %d MiB", got>>20, n>>20)
	}
	if r.Close() != nil {
		t.Error("a closed reserve cannot be closed again")
	}
	var none *Reserve
	if none.Close() != nil {
		t.Error("a nil reserve cannot be closed")
	}
}

func TestReportingReadsTheBalloonsFeatures(t *testing.T) {
	device := func(root, name, id, features string) {
		dir := filepath.Join(root, "sys/bus/virtio/devices", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for file, v := range map[string]string{"device": id + "\n", "features": features + "\n"} {
			if err := os.WriteFile(filepath.Join(dir, file), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	const reporting = "0110010100000000000000000000000010000000"
	tests := []struct {
		name  string
		setup func(root string)
		want  bool
	}{
		{"no virtio devices", func(string) {}, false},
		{"a balloon that reports free pages", func(root string) {
			device(root, "virtio0", "0x0001", "1111111111")
			device(root, "virtio1", "0x0005", reporting)
		}, true},
		{"a balloon without free page reporting", func(root string) {
			device(root, "virtio0", "0x0005", "0110000100000000000000000000000010000000")
		}, false},
		{"bit 5 of another device", func(root string) { device(root, "virtio0", "0x0002", reporting) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			tt.setup(root)
			if got := Reporting(root); got != tt.want {
				t.Errorf("Reporting = %v, want %v", got, tt.want)
			}
		})
	}
}
