package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// algorithmSpread is the placement algorithm --spread asks for; the
// scheduler's default is bin-packing.
const algorithmSpread = "spread"

// errNoNodeFits ends a dry run that found no node for the container,
// after it printed why each was rejected.
var errNoNodeFits = errors.New("no node can take the container: the scheduler rejected every node (see above)")

// placementFlags are run's flags that only a cluster understands.
type placementFlags struct {
	node        string
	constraints []string
	pin         bool
	spread      bool
	dryRun      bool
}

// placementFlagNames are the names of placementFlags, as messages list
// them.
var placementFlagNames = []string{"node", "constraint", "pin", "spread", "dry-run"}

func addPlacementFlags(cmd *cobra.Command) *placementFlags {
	p := &placementFlags{}
	f := cmd.Flags()
	f.StringVar(&p.node, "node", "", "cluster: start on this node (the balancer may move it later; add --pin to keep it there)")
	f.StringArrayVar(&p.constraints, "constraint", nil, "cluster: only on a node with the label K=V (repeatable)")
	f.BoolVar(&p.pin, "pin", false, "cluster: keep the balancer from moving the container")
	f.BoolVar(&p.spread, "spread", false, "cluster: prefer the emptiest node (default: bin-pack, the fullest node the container fits)")
	f.BoolVar(&p.dryRun, "dry-run", false,
		"cluster: only show the placement: the candidate nodes with their scores, and why each other node was rejected")
	return p
}

// runInCluster runs the container in the cluster when the target is one;
// placed says whether it did (or failed to), so that run goes on to the
// agent only when not.
func runInCluster(cmd *cobra.Command, g *globalOptions, req *pb.RunContainerRequest, p *placementFlags, out outputFormat) (placed bool, err error) {
	t, err := g.target()
	if err != nil {
		return false, nil // the agent path reports it
	}
	if t.kind != clusterTarget {
		var given []string
		for _, name := range placementFlagNames {
			if cmd.Flags().Changed(name) {
				given = append(given, "--"+name)
			}
		}
		if len(given) == 0 {
			return false, nil
		}
		return true, clusterFlagsError(t, given)
	}
	for _, kv := range p.constraints {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return true, fmt.Errorf("--constraint %q: want LABEL=VALUE", kv)
		}
	}
	creq := &pb.RunRequest{Container: req, Node: p.node, Constraints: p.constraints, Pin: p.pin, DryRun: p.dryRun}
	if p.spread {
		creq.Algorithm = algorithmSpread
	}
	var resp *pb.RunResponse
	if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
		resp, err = c.Run(cmd.Context(), creq)
		return err
	}); err != nil {
		return true, err
	}
	if p.dryRun {
		return true, printPlacement(cmd.OutOrStdout(), resp.GetPlacement(), out)
	}
	c := resp.GetContainer()
	if out == outputJSON {
		return true, printJSON(cmd.OutOrStdout(), newContainerView(c))
	}
	fmt.Fprintln(cmd.OutOrStdout(), c.GetId())
	fmt.Fprintf(cmd.ErrOrStderr(), "placed %s on node %s\n", c.GetName(), c.GetNode())
	return true, nil
}

// placementView is a dry run's placement as `run --dry-run -o json`
// prints it.
type placementView struct {
	// Node is where the container would go; empty when nowhere.
	Node string `json:"node"`
	// Candidates are best first.
	Candidates []candidateView `json:"candidates"`
	Rejected   []rejectionView `json:"rejected"`
}

type candidateView struct {
	Node  string          `json:"node"`
	Score float64         `json:"score"`
	Parts []scorePartView `json:"parts"`
}

type scorePartView struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
}

type rejectionView struct {
	Node   string `json:"node"`
	Filter string `json:"filter"`
	Reason string `json:"reason"`
}

func newPlacementView(p *pb.Placement) placementView {
	v := placementView{Node: p.GetNode(), Candidates: []candidateView{}, Rejected: []rejectionView{}}
	for _, c := range p.GetCandidates() {
		cv := candidateView{Node: c.GetNode(), Score: c.GetScore(), Parts: []scorePartView{}}
		for _, part := range c.GetParts() {
			cv.Parts = append(cv.Parts, scorePartView{Name: part.GetName(), Value: part.GetValue()})
		}
		v.Candidates = append(v.Candidates, cv)
	}
	for _, r := range p.GetRejected() {
		v.Rejected = append(v.Rejected, rejectionView{Node: r.GetNode(), Filter: r.GetFilter(), Reason: r.GetReason()})
	}
	return v
}

// printPlacement prints a dry run: where the container would go, the
// candidates with their scores and the parts they add up from, then each
// rejected node with the filter that rejected it and why.
//
//	would run on n2
//
//	CANDIDATE  SCORE  PARTS
//	n2         0.820  binpack=0.700 image=0.120
//
//	REJECTED  FILTER    REASON
//	n3        capacity  needs 2 CPUs, 1 CPU free
//
// It returns errNoNodeFits when no node would take the container.
func printPlacement(w io.Writer, p *pb.Placement, out outputFormat) error {
	v := newPlacementView(p)
	if out == outputJSON {
		if err := printJSON(w, v); err != nil {
			return err
		}
	} else if err := writePlacement(w, v); err != nil {
		return err
	}
	if v.Node == "" {
		return errNoNodeFits
	}
	return nil
}

func writePlacement(w io.Writer, v placementView) error {
	if v.Node != "" {
		fmt.Fprintf(w, "would run on %s\n", v.Node)
	} else {
		fmt.Fprintln(w, "would run nowhere: no node passed every filter")
	}
	if len(v.Candidates) > 0 {
		fmt.Fprintln(w)
		tw := table(w, "CANDIDATE", "SCORE", "PARTS")
		for _, c := range v.Candidates {
			parts := make([]string, 0, len(c.Parts))
			for _, p := range c.Parts {
				parts = append(parts, fmt.Sprintf("%s=%.3f", p.Name, p.Value))
			}
			fmt.Fprintf(tw, "%s\t%.3f\t%s\n", c.Node, c.Score, strings.Join(parts, " "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(v.Rejected) > 0 {
		fmt.Fprintln(w)
		tw := table(w, "REJECTED", "FILTER", "REASON")
		for _, r := range v.Rejected {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Node, r.Filter, r.Reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
