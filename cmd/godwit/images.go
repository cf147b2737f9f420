package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/internal/units"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func init() { register(newImageCommand) }

// imageView is an image as `image ls -o json` prints it.
type imageView struct {
	// Node is the node that holds the image: cluster mode only.
	Node    string      `json:"node,omitempty"`
	Name    string      `json:"name"`
	ID      string      `json:"id"`
	Format  string      `json:"format"`
	Size    int64       `json:"size"`
	Created time.Time   `json:"created"`
	Layers  []layerView `json:"layers"`
}

type layerView struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

func newImageView(img *pb.Image) imageView {
	v := imageView{Name: img.GetName(), ID: img.GetId(), Format: img.GetFormat(), Size: img.GetSize(),
		Created: img.GetCreated().AsTime(), Layers: []layerView{}}
	for _, l := range img.GetLayers() {
		v.Layers = append(v.Layers, layerView{Digest: l.GetDigest(), Size: l.GetSize()})
	}
	return v
}

func newImageCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage the images of the cluster's nodes (or of one agent's)"}
	cmd.AddCommand(newImageImportCommand(g), newImageListCommand(g), newImageRemoveCommand(g))
	return cmd
}

func newImageImportCommand(g *globalOptions) *cobra.Command {
	var (
		name, node string
		out        *outputFormat
	)
	cmd := &cobra.Command{
		Use:   "import FILE [--name NAME] [--node NODE]",
		Short: "Import an OCI image layout, `docker save` or plain rootfs tarball (gzip, zstd or uncompressed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if node != "" {
				if err := g.refuseInAgentMode("--node"); err != nil {
					return err
				}
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			ui := newProgressUI(cmd.ErrOrStderr(), "import "+args[0])
			r := agentclient.NewProgressReader(f, st.Size(), func(done, total int64) { ui.update("uploading", done, total) })
			var img *pb.Image
			if g.isCluster() {
				var ci *pb.ClusterImage
				ci, err = importToCluster(cmd.Context(), g, r, node, name, st.Size())
				img, node = ci.GetImage(), ci.GetNode()
			} else {
				err = g.call(func(c pb.AgentServiceClient) (err error) {
					img, err = agentclient.ImportImage(cmd.Context(), c, r, name, st.Size())
					return err
				})
			}
			ui.finish()
			if err != nil {
				return err
			}
			v := newImageView(img)
			v.Node = node
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %s (%s, %d layers, %s) as %s",
				img.GetName(), img.GetFormat(), len(img.GetLayers()), units.FormatBytes(img.GetSize()), shortDigest(img.GetId()))
			if node != "" {
				fmt.Fprintf(cmd.OutOrStdout(), " on node %s", node)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name for the image (default: the tag inside the tarball)")
	cmd.Flags().StringVar(&node, "node", "", "cluster: the node to import into (default: one the scheduler picks)")
	out = addOutputFlag(cmd)
	return cmd
}

func newImageListCommand(g *globalOptions) *cobra.Command {
	var (
		out  *outputFormat
		node string
	)
	cmd := &cobra.Command{
		Use:     "ls [--node NODE]",
		Aliases: []string{"list"},
		Short:   "List the images of the cluster's nodes (or of one agent's node)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.isCluster() {
				return listClusterImages(cmd, g, node, *out)
			}
			if node != "" {
				if err := g.refuseInAgentMode("--node"); err != nil {
					return err
				}
			}
			var resp *pb.ListImagesResponse
			if err := g.call(func(c pb.AgentServiceClient) (err error) {
				resp, err = c.ListImages(cmd.Context(), &pb.ListImagesRequest{})
				return err
			}); err != nil {
				return err
			}
			views := make([]imageView, 0, len(resp.GetImages()))
			for _, img := range resp.GetImages() {
				views = append(views, newImageView(img))
			}
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), views)
			}
			tw := table(cmd.OutOrStdout(), "NAME", "ID", "FORMAT", "LAYERS", "SIZE", "CREATED")
			for _, v := range views {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", v.Name, shortDigest(v.ID), v.Format, len(v.Layers),
					units.FormatBytes(v.Size), createdText(v.Created))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "cluster: only this node's images")
	out = addOutputFlag(cmd)
	return cmd
}

func newImageRemoveCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "rm IMAGE...",
		Aliases: []string{"remove"},
		Short:   "Remove images no container uses",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(func(c pb.AgentServiceClient) error {
				for _, ref := range args {
					if _, err := c.RemoveImage(cmd.Context(), &pb.RemoveImageRequest{Ref: ref}); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), ref)
				}
				return nil
			})
		},
	}
}

// shortDigest prints the first 12 hex digits of a sha256 digest.
func shortDigest(d string) string {
	const prefix = "sha256:"
	if len(d) > len(prefix) && d[:len(prefix)] == prefix {
		d = d[len(prefix):]
	}
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// createdText is when an image was built, or "-" when it does not say
// (a plain rootfs tarball has no config to say it).
func createdText(t time.Time) string {
	if t.IsZero() || t.Unix() == 0 {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}
