package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/clictx"
)

func init() { register(newContextCommand) }

// contextView is a context as `context ls -o json` and `context show -o
// json` print it.
type contextView struct {
	Name     string       `json:"name"`
	Addr     string       `json:"addr"`
	Current  bool         `json:"current"`
	Insecure bool         `json:"insecure"`
	TLS      *tlsFileView `json:"tls,omitempty"`
}

type tlsFileView struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

func newContextView(f *clictx.File, c clictx.Context) contextView {
	v := contextView{Name: c.Name, Addr: c.Addr, Current: c.Name == f.CurrentName, Insecure: c.Insecure}
	if !c.TLS.IsZero() {
		v.TLS = &tlsFileView{CA: c.TLS.CA, Cert: c.TLS.Cert, Key: c.TLS.Key}
	}
	return v
}

func newContextCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "context",
		Short: "List, switch and remove the clusters the CLI talks to by default",
		Long: `A context names a cluster: a scheduler's address and the TLS files to reach
it with. Commands talk to the current context's cluster unless --addr or
--agent (or GODWIT_ADDR or GODWIT_AGENT) says otherwise; TLS flags and
GODWIT_TLS_* override its TLS files. ` + "`godwit dev up`" + ` and ` + "`godwit agent --dev`" + `
add theirs and make it current.

Contexts live in $GODWIT_CONFIG, else $XDG_CONFIG_HOME/godwit/contexts.json,
else ~/.config/godwit/contexts.json.`,
	}
	cmd.AddCommand(newContextListCommand(), newContextUseCommand(), newContextShowCommand(),
		newContextRemoveCommand(), newContextAddCommand(g))
	return cmd
}

func newContextListCommand() *cobra.Command {
	var out *outputFormat
	cmd := &cobra.Command{
		Use:     "ls [-o json]",
		Aliases: []string{"list"},
		Short:   "List the contexts; the current one is marked *",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := clictx.Load()
			if err != nil {
				return err
			}
			views := make([]contextView, 0, len(f.Contexts))
			for _, c := range f.Contexts {
				views = append(views, newContextView(f, c))
			}
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), views)
			}
			if len(views) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "no contexts in %s: `godwit dev up` and `godwit context add` make them\n", f.Path)
				return nil
			}
			tw := table(cmd.OutOrStdout(), "CURRENT", "NAME", "ADDRESS", "TRANSPORT")
			for _, v := range views {
				mark := ""
				if v.Current {
					mark = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", mark, v.Name, v.Addr, transport(v))
			}
			return tw.Flush()
		},
	}
	out = addOutputFlag(cmd)
	return cmd
}

// transport is "mTLS" or "plaintext", as context ls prints it.
func transport(v contextView) string {
	if v.Insecure {
		return "plaintext"
	}
	return "mTLS"
}

func newContextUseCommand() *cobra.Command {
	var none bool
	cmd := &cobra.Command{
		Use:   "use NAME | --none",
		Short: "Make a context the current one (--none: no context; commands then talk to the agent at --agent's default)",
		Args: func(cmd *cobra.Command, args []string) error {
			if none == (len(args) == 1) || len(args) > 1 {
				return errors.New("give one context NAME, or --none")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if none {
				if err := clictx.Use(""); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "no context is current now")
				return nil
			}
			if err := clictx.Use(args[0]); err != nil {
				return err
			}
			f, err := clictx.Load()
			if err != nil {
				return err
			}
			if c, ok := f.Current(); ok {
				fmt.Fprintf(cmd.OutOrStdout(), "switched to context %s: commands talk to the cluster at %s\n", c.Name, c.Addr)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&none, "none", false, "leave no context current")
	return cmd
}

func newContextShowCommand() *cobra.Command {
	var out *outputFormat
	cmd := &cobra.Command{
		Use:   "show [NAME] [-o json]",
		Short: "Show the current context, or the one named",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := clictx.Load()
			if err != nil {
				return err
			}
			var (
				c  *clictx.Context
				ok bool
			)
			if len(args) == 1 {
				if c, ok = f.Get(args[0]); !ok {
					return fmt.Errorf("context %q: %w in %s (see `godwit context ls`)", args[0], clictx.ErrNotFound, f.Path)
				}
			} else if c, ok = f.Current(); !ok {
				return fmt.Errorf("no context is current in %s: pick one with `godwit context use NAME` (see `godwit context ls`)", f.Path)
			}
			v := newContextView(f, *c)
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return writeContext(cmd.OutOrStdout(), f.Path, v)
		},
	}
	out = addOutputFlag(cmd)
	return cmd
}

func writeContext(w io.Writer, path string, v contextView) error {
	tw := table(w, "FIELD", "VALUE")
	row := func(k, val string) { fmt.Fprintf(tw, "%s\t%s\n", k, val) }
	row("name", v.Name)
	row("address", v.Addr)
	row("current", yesNo(v.Current))
	row("transport", transport(v))
	if v.TLS != nil {
		row("tls ca", v.TLS.CA)
		row("tls cert", v.TLS.Cert)
		row("tls key", v.TLS.Key)
	}
	row("file", path)
	return tw.Flush()
}

func newContextRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove contexts (removing the current one leaves none current)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				if err := clictx.Remove(name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed context %s\n", name)
			}
			return nil
		},
	}
}

func newContextAddCommand(g *globalOptions) *cobra.Command {
	var insecure, use bool
	cmd := &cobra.Command{
		Use:   "add NAME --addr ADDR (--tls-ca FILE --tls-cert FILE --tls-key FILE | --insecure) [--use]",
		Short: "Add a context (or replace the one of that name) for a cluster's scheduler",
		Example: `  godwit context add prod --addr 10.0.0.1:7700 --tls-ca ca.pem --tls-cert operator.pem --tls-key operator-key.pem --use
  godwit context add lab --addr 127.0.0.1:7700 --insecure`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("addr") {
				return errors.New("give the cluster's address with --addr HOST:PORT (one of its schedulers)")
			}
			c := clictx.Context{Name: args[0], Addr: g.clusterAddr, TLS: g.tlsFiles, Insecure: insecure}
			if err := clictx.Save(c, use); err != nil {
				return err
			}
			msg := "added context " + c.Name
			if use {
				msg += ", now the current one"
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	cmd.Flags().BoolVar(&insecure, "insecure", false, "the cluster speaks plaintext (schedulers started with --insecure)")
	cmd.Flags().BoolVar(&use, "use", false, "make it the current context")
	return cmd
}
