package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/pki"
)

func init() { register(newTLSCommand) }

const (
	// defaultCAName is the common name of a CA that `tls ca create`
	// creates.
	defaultCAName = "godwit cluster CA"
	// caDirMode is the mode of the CA's directory: its key is in it.
	caDirMode = 0o700
)

func newTLSCommand(*globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Create the cluster's certificate authority, role certificates and gossip key",
		Long: `Create the files of godwit's mutual TLS and gossip encryption: a
certificate authority (CA), certificates it signs, each with a role, and
the key that encrypts the gossip among agents and schedulers.

Every certificate carries one role, which servers check on every call:
  scheduler  a scheduler replica (serves: needs --host)
  agent      a node agent (serves: needs --host)
  operator   a person or tool that runs the cluster: every command
  viewer     read only: ps, inspect, logs, node ls, status, events

The CA's key lies in a file beside its certificate, readable by its owner
only: whoever reads it can mint certificates of any role. Keep it off the
nodes.`,
		Example: `  godwit tls ca create --dir /etc/godwit/ca
  godwit tls cert create --dir /etc/godwit/ca --role agent --name n1 --host 10.0.0.1
  godwit tls cert create --dir /etc/godwit/ca --role operator --name alice
  godwit tls gossip-key create /etc/godwit/gossip.key`,
	}
	cmd.AddCommand(newTLSCACommand(), newTLSCertCommand(), newTLSGossipKeyCommand())
	return cmd
}

func newTLSCACommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "The cluster's certificate authority",
	}
	var dir, name string
	create := &cobra.Command{
		Use:   "create --dir DIR [--name NAME]",
		Short: "Create a certificate authority in DIR (ca.pem, and ca-key.pem readable by its owner only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			certFile, keyFile := filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile)
			for _, f := range []string{certFile, keyFile} {
				if _, err := os.Stat(f); err == nil {
					return fmt.Errorf("%s exists: a new CA would leave every certificate the old one signed untrusted; remove it first, or give another --dir", f)
				} else if !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			if err := os.MkdirAll(dir, caDirMode); err != nil {
				return fmt.Errorf("--dir: %w", err)
			}
			ca, err := pki.NewCA(name)
			if err != nil {
				return err
			}
			if err := ca.WriteFiles(certFile, keyFile); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote the CA %s and its key %s\nnext: godwit tls cert create --dir %s --role agent --name NODE --host ADDRESS\n",
				certFile, keyFile, dir)
			return nil
		},
	}
	create.Flags().StringVar(&dir, "dir", "", "directory for the CA's certificate and key (created)")
	create.Flags().StringVar(&name, "name", defaultCAName, "the CA's name")
	_ = create.MarkFlagRequired("dir")
	cmd.AddCommand(create)
	return cmd
}

func newTLSCertCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Certificates of the cluster's CA, one role each",
	}
	var (
		dir, name, role, out string
		hosts                []string
	)
	create := &cobra.Command{
		Use:   "create --dir DIR --role scheduler|agent|operator|viewer --name NAME [--host ADDRESS]... [--out DIR]",
		Short: "Issue a certificate of a role, signed by the CA in --dir",
		Long: `Issue a certificate signed by the CA in --dir, with a new key and one role.

A scheduler's or an agent's certificate is --name its node name and every
--host (address or DNS name) that others dial it at: they accept only a
certificate that names the address they dialled; at least one is needed.
An operator's or a viewer's is for a client (the CLI) only: --name says
who it is, in refusals and the audit record, and it takes no --host.

It writes --out (default DIR/NAME): ca.pem (a copy of the CA's
certificate), cert.pem and key.pem (mode 0600), replacing what is there.`,
		Example: `  godwit tls cert create --dir /etc/godwit/ca --role agent --name n1 --host 10.0.0.1
  godwit agent --name n1 ... --tls-ca /etc/godwit/ca/n1/ca.pem --tls-cert /etc/godwit/ca/n1/cert.pem --tls-key /etc/godwit/ca/n1/key.pem
  godwit tls cert create --dir /etc/godwit/ca --role operator --name alice
  GODWIT_TLS_CA=/etc/godwit/ca/alice/ca.pem GODWIT_TLS_CERT=/etc/godwit/ca/alice/cert.pem GODWIT_TLS_KEY=/etc/godwit/ca/alice/key.pem godwit ps`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := pki.ParseRole(role)
			if err != nil {
				return fmt.Errorf("--role: %w", err)
			}
			ca, err := pki.LoadCA(filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile))
			if err != nil {
				return fmt.Errorf("%w (create one with `godwit tls ca create --dir %s`)", err, dir)
			}
			if out == "" {
				out = filepath.Join(dir, name)
			}
			f, err := ca.IssueTo(out, pki.CertRequest{Name: name, Role: r, Hosts: hosts})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote the %s certificate of %s: --tls-ca %s --tls-cert %s --tls-key %s\n", r, name, f.CA, f.Cert, f.Key)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&dir, "dir", "", "the CA's directory (godwit tls ca create --dir)")
	f.StringVar(&role, "role", "", "what the holder may do: "+strings.ReplaceAll(roleChoices(), "|", ", "))
	f.StringVar(&name, "name", "", "the node's name, or the person's or tool's")
	f.StringArrayVar(&hosts, "host", nil, "an IP address or DNS name a scheduler or agent is reached at (repeatable)")
	f.StringVar(&out, "out", "", "directory for the three files (default DIR/NAME)")
	for _, required := range []string{"dir", "role", "name"} {
		_ = create.MarkFlagRequired(required)
	}
	cmd.AddCommand(create)
	return cmd
}

// roleChoices lists the roles as "scheduler|agent|operator|viewer".
func roleChoices() string {
	roles := pki.Roles()
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, "|")
}

func newTLSGossipKeyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gossip-key",
		Short: "The key that encrypts the gossip among agents and schedulers",
	}
	create := &cobra.Command{
		Use:   "create FILE",
		Short: "Write a new random gossip key (32 bytes, base64) to FILE, mode 0600",
		Long: `Write a new random gossip key to FILE: 32 random bytes (AES-256), in
base64, readable by its owner only. Every agent and scheduler of the
cluster takes the same file (--gossip-key-file). An existing FILE is
never replaced: a member with another key could no longer gossip.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := pki.CreateGossipKey(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote the gossip key %s: give every agent and scheduler --gossip-key-file %s\n", args[0], args[0])
			return nil
		},
	}
	cmd.AddCommand(create)
	return cmd
}
