// Package agentclient holds the client side of the agent's streaming calls
// that every caller would otherwise write again: the CLI, benchmarks and,
// later, the scheduler.
package agentclient

import (
	"context"
	"fmt"
	"io"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// importChunk is how many bytes of the tarball each message carries: big
// enough to keep per-message overhead low, well under gRPC's 4 MiB limit.
const importChunk = 256 << 10

// ImportImage streams an image tarball from r to the agent and returns the
// imported image. size is the tarball's length when known (0 otherwise),
// for the agent's progress. If the agent refuses the image part-way, the
// upload stops and the agent's reason is returned.
func ImportImage(ctx context.Context, client pb.AgentServiceClient, r io.Reader, name string, size int64) (*pb.Image, error) {
	stream, err := client.ImportImage(ctx)
	if err != nil {
		return nil, err
	}
	header := &pb.ImportImageHeader{Name: name, Size: size}
	if err := stream.Send(&pb.ImportImageRequest{Part: &pb.ImportImageRequest_Header{Header: header}}); err != nil {
		return nil, err
	}
	buf := make([]byte, importChunk)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			chunk := &pb.ImportImageRequest_Chunk{Chunk: append([]byte(nil), buf[:n]...)}
			if err := stream.Send(&pb.ImportImageRequest{Part: chunk}); err != nil {
				break // the agent ended the stream; CloseAndRecv says why
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("read image tarball: %w", rerr)
		}
	}
	return stream.CloseAndRecv()
}
