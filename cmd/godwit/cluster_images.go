package main

import (
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/units"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// clusterImportChunk is how many bytes of the tarball each message to
// the scheduler carries: as many as to an agent, well under gRPC's 4 MiB
// message limit.
const clusterImportChunk = 256 << 10

// importToCluster streams the tarball r (size bytes) to the scheduler,
// which imports it into node, or a node it picks when node is empty.
func importToCluster(ctx context.Context, g *globalOptions, r io.Reader, node, name string, size int64) (*pb.ClusterImage, error) {
	var img *pb.ClusterImage
	err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
		img, err = streamImage(ctx, c, r, node, name, size)
		return err
	})
	return img, err
}

// streamImage is importToCluster's call on the scheduler client c.
func streamImage(ctx context.Context, c pb.ClusterServiceClient, r io.Reader, node, name string, size int64) (*pb.ClusterImage, error) {
	stream, err := c.ImportImage(ctx)
	if err != nil {
		return nil, err
	}
	header := &pb.ClusterImportImageHeader{Node: node, Image: &pb.ImportImageHeader{Name: name, Size: size}}
	if err := stream.Send(&pb.ClusterImportImageRequest{Part: &pb.ClusterImportImageRequest_Header{Header: header}}); err != nil {
		return nil, err
	}
	buf := make([]byte, clusterImportChunk)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			chunk := &pb.ClusterImportImageRequest_Chunk{Chunk: append([]byte(nil), buf[:n]...)}
			if err := stream.Send(&pb.ClusterImportImageRequest{Part: chunk}); err != nil {
				break // the scheduler ended the stream; CloseAndRecv says why
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

// listClusterImages is `image ls` in a cluster: every node's images, or
// node's, one row per node and image.
func listClusterImages(cmd *cobra.Command, g *globalOptions, node string, out outputFormat) error {
	var resp *pb.ClusterListImagesResponse
	if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
		resp, err = c.ListImages(cmd.Context(), &pb.ClusterListImagesRequest{Node: node})
		return err
	}); err != nil {
		return err
	}
	views := make([]imageView, 0, len(resp.GetImages()))
	for _, ci := range resp.GetImages() {
		v := newImageView(ci.GetImage())
		v.Node = ci.GetNode()
		views = append(views, v)
	}
	sort.SliceStable(views, func(i, j int) bool {
		if views[i].Node != views[j].Node {
			return views[i].Node < views[j].Node
		}
		return views[i].Name < views[j].Name
	})
	if out == outputJSON {
		return printJSON(cmd.OutOrStdout(), views)
	}
	tw := table(cmd.OutOrStdout(), "NODE", "NAME", "ID", "FORMAT", "LAYERS", "SIZE", "CREATED")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", v.Node, v.Name, shortDigest(v.ID), v.Format, len(v.Layers),
			units.FormatBytes(v.Size), createdText(v.Created))
	}
	return tw.Flush()
}
