package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit/godwit/internal/clictx"
	"github.com/godwit/godwit/internal/pki"
)

func TestContextCommands(t *testing.T) {
	path := isolateCLI(t)
	dir := t.TempDir()
	certs := pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "op.pem"), Key: filepath.Join(dir, "op-key.pem")}

	out, stderr, err := runCLI(t, "context", "ls")
	if err != nil || out != "" || !strings.Contains(stderr, "no contexts in "+path) {
		t.Fatalf("context ls with no file: %q, %q, %v", out, stderr, err)
	}
	steps := []struct {
		name string
		args []string
		// want is part of stdout, or of the error when wantErr.
		want    string
		wantErr bool
	}{
		{name: "add with TLS", args: []string{"--addr", "10.0.0.1:7700", "--tls-ca", certs.CA, "--tls-cert", certs.Cert, "--tls-key", certs.Key,
			"context", "add", "prod", "--use"}, want: "added context prod, now the current one"},
		{name: "add insecure", args: []string{"--addr", "127.0.0.1:7700", "context", "add", "lab", "--insecure"}, want: "added context lab\n"},
		{name: "add without --addr", args: []string{"context", "add", "x", "--insecure"}, want: "--addr HOST:PORT", wantErr: true},
		{name: "add with neither TLS nor --insecure", args: []string{"--addr", "127.0.0.1:7700", "context", "add", "x"}, want: "mark it insecure", wantErr: true},
		{name: "ls marks the current one", args: []string{"context", "ls"}, want: "*        prod  10.0.0.1:7700   mTLS"},
		{name: "show the current one", args: []string{"context", "show"}, want: "tls key    " + certs.Key},
		{name: "show another", args: []string{"context", "show", "lab"}, want: "transport  plaintext"},
		{name: "show an unknown one", args: []string{"context", "show", "nope"}, want: "no such context", wantErr: true},
		{name: "use", args: []string{"context", "use", "lab"}, want: "switched to context lab: commands talk to the cluster at 127.0.0.1:7700"},
		{name: "use an unknown one", args: []string{"context", "use", "nope"}, want: "known are lab, prod", wantErr: true},
		{name: "use with no name", args: []string{"context", "use"}, want: "give one context NAME, or --none", wantErr: true},
		{name: "rm the current one", args: []string{"context", "rm", "lab"}, want: "removed context lab"},
		{name: "show with none current", args: []string{"context", "show"}, want: "no context is current", wantErr: true},
		{name: "rm an unknown one", args: []string{"context", "rm", "lab"}, want: "no such context", wantErr: true},
	}
	for _, s := range steps {
		out, _, err := runCLI(t, s.args...)
		switch {
		case s.wantErr && (err == nil || !strings.Contains(err.Error(), s.want)):
			t.Errorf("%s: %v, want an error saying %q", s.name, err, s.want)
		case !s.wantErr && err != nil:
			t.Errorf("%s: %v", s.name, err)
		case !s.wantErr && !strings.Contains(out, s.want):
			t.Errorf("%s: output\n%s\nwant %q", s.name, out, s.want)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != clictx.FileMode {
		t.Errorf("contexts file mode %#o, want %#o", st.Mode().Perm(), clictx.FileMode)
	}
	out, _, err = runCLI(t, "context", "ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var views []contextView
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("context ls -o json: %v\n%s", err, out)
	}
	want := contextView{Name: "prod", Addr: "10.0.0.1:7700", TLS: &tlsFileView{CA: certs.CA, Cert: certs.Cert, Key: certs.Key}}
	if len(views) != 1 || views[0].Name != want.Name || views[0].Current || *views[0].TLS != *want.TLS {
		t.Errorf("context ls -o json = %+v, want only prod, not current", views)
	}
	if _, _, err := runCLI(t, "context", "use", "prod"); err != nil {
		t.Fatal(err)
	}
	if out, _, err := runCLI(t, "context", "use", "--none"); err != nil || !strings.Contains(out, "no context is current") {
		t.Errorf("context use --none: %q, %v", out, err)
	}
	f, err := clictx.Load()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Current(); ok {
		t.Errorf("a context is current after use --none: %q", f.CurrentName)
	}
}

func TestBrokenContextsFileIsNamed(t *testing.T) {
	path := isolateCLI(t)
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := runCLI(t, "ps")
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "--addr") {
		t.Errorf("ps with a broken contexts file: %v, want an error naming %s and the way around it", err, path)
	}
	if _, _, err := runCLI(t, "context", "rm", "x"); err == nil || errors.Is(err, clictx.ErrNotFound) {
		t.Errorf("context rm on a broken file: %v, want the file's error", err)
	}
}
