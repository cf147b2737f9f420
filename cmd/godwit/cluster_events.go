package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func init() {
	register(newEventsCommand)
	register(newAuditCommand)
}

// eventView is an event as `events -o json` prints it: one JSON object
// per line.
type eventView struct {
	Index     uint64     `json:"index"`
	Time      *time.Time `json:"time,omitempty"`
	Kind      string     `json:"kind"`
	Node      string     `json:"node,omitempty"`
	Container string     `json:"container,omitempty"`
	Message   string     `json:"message,omitempty"`
}

func newEventView(e *pb.Event) eventView {
	return eventView{Index: e.GetIndex(), Time: timeOrNil(e.GetTime()), Kind: e.GetKind(), Node: e.GetNode(),
		Container: e.GetContainer(), Message: e.GetMessage()}
}

// line is the event as one line of text:
//
//	42 2025-06-01T10:00:00+02:00 container.placed node=n1 container=web: on n1 by binpack
func (v eventView) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", v.Index)
	if v.Time != nil {
		b.WriteString(" " + v.Time.Local().Format(time.RFC3339))
	}
	b.WriteString(" " + v.Kind)
	if v.Node != "" {
		b.WriteString(" node=" + v.Node)
	}
	if v.Container != "" {
		b.WriteString(" container=" + v.Container)
	}
	if v.Message != "" {
		b.WriteString(": " + v.Message)
	}
	return b.String()
}

func newEventsCommand(g *globalOptions) *cobra.Command {
	var (
		follow bool
		since  uint64
		out    *outputFormat
	)
	cmd := &cobra.Command{
		Use:   "events [-f] [--since INDEX] [-o json]",
		Short: "Print the cluster's state changes, one per line (-f: keep following them)",
		Long: `Print the cluster's state changes, one per line: its raft index, time, kind,
node, container and message. With -o json, each is one JSON object on its
own line. --since INDEX prints only those after that index (the index of
the last one seen, to resume); -f keeps printing new ones until interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := interruptible(cmd)
			defer cancel()
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetEscapeHTML(false)
			err := g.callCluster(func(c pb.ClusterServiceClient) error {
				stream, err := c.Events(ctx, &pb.EventsRequest{Since: since, Follow: follow})
				if err != nil {
					return err
				}
				for {
					e, err := stream.Recv()
					if err == io.EOF {
						return nil
					}
					if err != nil {
						return err
					}
					v := newEventView(e)
					if *out == outputJSON {
						err = enc.Encode(v)
					} else {
						_, err = fmt.Fprintln(cmd.OutOrStdout(), v.line())
					}
					if err != nil {
						return err
					}
				}
			})
			if errors.Is(err, context.Canceled) && ctx.Err() != nil && cmd.Context().Err() == nil {
				return nil // interrupted: how following ends
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	cmd.Flags().Uint64Var(&since, "since", 0, "print only events after this raft index (default: all the scheduler keeps)")
	out = addOutputFlag(cmd)
	return cmd
}

// auditView is an audit record as `audit -o json` prints it.
type auditView struct {
	Index   uint64     `json:"index"`
	Time    *time.Time `json:"time,omitempty"`
	Who     string     `json:"who"`
	Role    string     `json:"role"`
	Action  string     `json:"action"`
	Target  string     `json:"target"`
	Outcome string     `json:"outcome"`
}

func newAuditCommand(g *globalOptions) *cobra.Command {
	var (
		limit int32
		out   *outputFormat
	)
	cmd := &cobra.Command{
		Use:   "audit [--limit N] [-o json]",
		Short: "List the operator actions recorded in the cluster: who did what, when, and how it ended",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return fmt.Errorf("--limit %d: want 0 (all) or more", limit)
			}
			var resp *pb.AuditResponse
			if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
				resp, err = c.Audit(cmd.Context(), &pb.AuditRequest{Limit: limit})
				return err
			}); err != nil {
				return err
			}
			views := make([]auditView, 0, len(resp.GetRecords()))
			for _, r := range resp.GetRecords() {
				views = append(views, auditView{Index: r.GetIndex(), Time: timeOrNil(r.GetTime()), Who: r.GetWho(), Role: r.GetRole(),
					Action: r.GetAction(), Target: r.GetTarget(), Outcome: r.GetOutcome()})
			}
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), views)
			}
			tw := table(cmd.OutOrStdout(), "INDEX", "TIME", "WHO", "ROLE", "ACTION", "TARGET", "OUTCOME")
			for _, v := range views {
				when := ""
				if v.Time != nil {
					when = v.Time.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Index, when, v.Who, v.Role, v.Action, v.Target, v.Outcome)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().Int32Var(&limit, "limit", 0, "only the last N records (default: all the scheduler keeps)")
	out = addOutputFlag(cmd)
	return cmd
}
