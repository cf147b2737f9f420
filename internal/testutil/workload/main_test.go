package main

import (
	"testing"

	"github.com/klauspost/compress/zstd"
)

// The checkpoint benchmark relies on the workload's memory not shrinking
// under zstd, or it would measure the compressor, not the memory.
func TestFillMemoryIsIncompressible(t *testing.T) {
	mem := fillMemory(4)
	if len(mem) != 4*mib {
		t.Fatalf("fillMemory(4) gave %d bytes, want %d", len(mem), 4*mib)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	packed := enc.EncodeAll(mem, nil)
	if ratio := float64(len(packed)) / float64(len(mem)); ratio < 0.99 {
		t.Errorf("zstd shrank the workload's memory to %.1f%% of its size, want it incompressible", 100*ratio)
	}
	if other := fillMemory(4); string(other[:4096]) == string(mem[:4096]) {
		t.Error("two fills gave the same bytes, want a fresh seed each start")
	}
}
