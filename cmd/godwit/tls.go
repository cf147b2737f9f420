package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/pki"
)

func init() { register(newTLSCommand) }

// defaultCAName is the common name of a CA that `tls ca` creates.
const defaultCAName = "godwit throwaway CA"

func newTLSCommand(*globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Create a throwaway certificate authority and node certificates for agents and the CLI",
		Long: `Create the files of godwit's mutual TLS: a certificate authority (CA) and
certificates it signs, for agents (--tls-ca, --tls-cert, --tls-key of
godwit agent) and for the CLI (the global --tls-* flags or GODWIT_TLS_*).

The CA made here is a throwaway one, for one machine, tests and demos: its
key lies in a file beside its certificate, readable by its owner only.
The cluster will manage its own CA once the scheduler arrives.`,
	}
	cmd.AddCommand(newTLSCACommand(), newTLSCertCommand())
	return cmd
}

func newTLSCACommand() *cobra.Command {
	var dir, name string
	cmd := &cobra.Command{
		Use:   "ca --dir DIR",
		Short: "Create a certificate authority in DIR (ca.pem, ca-key.pem)",
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
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("--dir: %w", err)
			}
			ca, err := pki.NewCA(name)
			if err != nil {
				return err
			}
			if err := ca.WriteFiles(certFile, keyFile); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote the CA %s and its key %s\nnext: godwit tls cert --dir %s --name NODE --host ADDRESS\n",
				certFile, keyFile, dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the CA's certificate and key (created)")
	cmd.Flags().StringVar(&name, "name", defaultCAName, "the CA's name")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

func newTLSCertCommand() *cobra.Command {
	var (
		dir, name, out string
		hosts          []string
	)
	cmd := &cobra.Command{
		Use:   "cert --dir DIR --name NAME [--host ADDRESS]... [--out DIR]",
		Short: "Issue a certificate signed by the CA in --dir, for an agent or a client",
		Long: `Issue a certificate signed by the CA in --dir, with a new key, valid for
both ends of a connection. For an agent, --name is its node name and --host
every address or DNS name that clients and other agents dial it at: they
accept only a certificate that names the address they dialled. A client
(the CLI) needs no --host.

It writes --out (default DIR/NAME): ca.pem (a copy of the CA's
certificate), cert.pem and key.pem (mode 0600).`,
		Example: `  godwit tls cert --dir /etc/godwit/ca --name n1 --host 10.0.0.1
  godwit agent --name n1 ... --tls-ca /etc/godwit/ca/n1/ca.pem --tls-cert /etc/godwit/ca/n1/cert.pem --tls-key /etc/godwit/ca/n1/key.pem
  godwit tls cert --dir /etc/godwit/ca --name operator
  GODWIT_TLS_CA=/etc/godwit/ca/operator/ca.pem GODWIT_TLS_CERT=/etc/godwit/ca/operator/cert.pem GODWIT_TLS_KEY=/etc/godwit/ca/operator/key.pem godwit ps`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := pki.LoadCA(filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile))
			if err != nil {
				return fmt.Errorf("%w (create one with `godwit tls ca --dir %s`)", err, dir)
			}
			if out == "" {
				out = filepath.Join(dir, name)
			}
			f, err := ca.IssueTo(out, name, hosts...)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote the certificate of %s: --tls-ca %s --tls-cert %s --tls-key %s\n", name, f.CA, f.Cert, f.Key)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the CA's directory (godwit tls ca --dir)")
	cmd.Flags().StringVar(&name, "name", "", "the node's name, or a client's")
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "an IP address or DNS name the agent is reached at (repeatable)")
	cmd.Flags().StringVar(&out, "out", "", "directory for the three files (default DIR/NAME)")
	_ = cmd.MarkFlagRequired("dir")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}
