package main

import (
	"bytes"
	"testing"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func TestWriteNodeInfoStrategies(t *testing.T) {
	v := nodeView{Name: "a", Address: "10.1.0.1:7420", Snapshotter: "overlay", ContainerCIDR: "10.88.0.0/24", CPUs: 2,
		MemoryBytes: 1 << 30, Kernel: "6.18.44", Runc: "1.3.6", CRIU: "4.2.1", Godwit: "dev",
		Strategies: newStrategyViews([]*pb.StrategySupport{
			{Name: "stop-copy", Supported: true},
			{Name: "pre-copy", Reason: "needs soft-dirty: the kernel does not mark written pages soft-dirty"},
		})}
	want := `FIELD           VALUE
name            a
address         10.1.0.1:7420
snapshotter     overlay
container cidr  10.88.0.0/24
cpus            2
memory          1.0 GiB
kernel          6.18.44
runc            1.3.6
criu            4.2.1
godwit          dev
strategy        stop-copy: yes
strategy        pre-copy: no: needs soft-dirty: the kernel does not mark written pages soft-dirty
`
	var buf bytes.Buffer
	if err := writeNodeInfo(&buf, v); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != want {
		t.Errorf("node info:\n%s\nwant:\n%s", got, want)
	}
}
