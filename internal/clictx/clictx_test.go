package clictx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/godwit/godwit/internal/pki"
)

// useTempFile points the package at a contexts file in a fresh directory
// that does not exist yet, and returns the file's path.
func useTempFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cfg", "contexts.json")
	t.Setenv(EnvConfig, path)
	return path
}

func tlsFiles(dir string) pki.Files {
	return pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")}
}

func TestPath(t *testing.T) {
	tests := []struct {
		name, config, xdg, want string
	}{
		{name: "GODWIT_CONFIG wins", config: "/etc/godwit/ctx.json", xdg: "/xdg", want: "/etc/godwit/ctx.json"},
		{name: "XDG_CONFIG_HOME", xdg: "/xdg", want: "/xdg/godwit/contexts.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvConfig, tt.config)
			t.Setenv("XDG_CONFIG_HOME", tt.xdg)
			got, err := Path()
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Path() = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("home", func(t *testing.T) {
		t.Setenv(EnvConfig, "")
		t.Setenv("XDG_CONFIG_HOME", "")
		t.Setenv("HOME", "/home/op")
		if got, _ := Path(); got != "/home/op/.config/godwit/contexts.json" {
			t.Errorf("Path() = %q, want ~/.config/godwit/contexts.json", got)
		}
	})
}

func TestMissingFileIsEmpty(t *testing.T) {
	path := useTempFile(t)
	f, err := Load()
	if err != nil {
		t.Fatalf("Load of a missing file: %v", err)
	}
	if f.Path != path || len(f.Contexts) != 0 {
		t.Errorf("Load = %+v, want an empty file at %s", f, path)
	}
	if c, ok := f.Current(); ok {
		t.Errorf("Current() = %+v with no file", c)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load created the file: %v", err)
	}
}

func TestSaveWritesAPrivateFileAndMakesCurrent(t *testing.T) {
	path := useTempFile(t)
	certs := tlsFiles("/pki/dev")
	if err := Save(Context{Name: "dev", Addr: "10.0.0.1:7700", TLS: certs}, true); err != nil {
		t.Fatal(err)
	}
	if err := Save(Context{Name: "lab", Addr: "127.0.0.1:7700", Insecure: true}, false); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != FileMode {
		t.Errorf("contexts file mode %#o, want %#o", st.Mode().Perm(), FileMode)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != dirMode {
		t.Errorf("directory: %v, %v; want mode %#o", st, err, dirMode)
	}
	f, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	c, ok := f.Current()
	if !ok || c.Name != "dev" || c.Addr != "10.0.0.1:7700" || c.TLS != certs || c.Insecure {
		t.Errorf("Current() = %+v, %v; want dev with its TLS files", c, ok)
	}
	if got := strings.Join(f.Names(), ","); got != "dev,lab" {
		t.Errorf("names %s, want dev,lab", got)
	}
	if lab, _ := f.Get("lab"); !lab.Insecure || !lab.TLS.IsZero() {
		t.Errorf("lab = %+v, want insecure without TLS", lab)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("the directory holds %v, want only the contexts file (no temporary or lock file)", entries)
	}
}

func TestSaveReplacesAContextOfTheSameName(t *testing.T) {
	useTempFile(t)
	for _, addr := range []string{"10.0.0.1:7700", "10.0.0.2:7700"} {
		if err := Save(Context{Name: "dev", Addr: addr, Insecure: true}, true); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Contexts) != 1 || f.Contexts[0].Addr != "10.0.0.2:7700" {
		t.Errorf("contexts %+v, want one dev at 10.0.0.2:7700", f.Contexts)
	}
}

func TestSaveMakesTLSPathsAbsolute(t *testing.T) {
	useTempFile(t)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(Context{Name: "dev", Addr: "10.0.0.1:7700", TLS: tlsFiles("pki")}, true); err != nil {
		t.Fatal(err)
	}
	f, _ := Load()
	c, _ := f.Current()
	if want := tlsFiles(filepath.Join(wd, "pki")); c.TLS != want {
		t.Errorf("TLS %+v, want %+v: a relative path would break from another directory", c.TLS, want)
	}
}

func TestValidate(t *testing.T) {
	certs := tlsFiles("/pki")
	tests := []struct {
		name string
		ctx  Context
		want string // part of the error; empty for valid
	}{
		{name: "TLS", ctx: Context{Name: "dev", Addr: "10.0.0.1:7700", TLS: certs}},
		{name: "insecure", ctx: Context{Name: "dev-1.a_b", Addr: "[::1]:7700", Insecure: true}},
		{name: "no name", ctx: Context{Addr: "10.0.0.1:7700", Insecure: true}, want: "name"},
		{name: "space in name", ctx: Context{Name: "my dev", Addr: "10.0.0.1:7700", Insecure: true}, want: "name"},
		{name: "no port", ctx: Context{Name: "dev", Addr: "10.0.0.1", Insecure: true}, want: "HOST:PORT"},
		{name: "no address", ctx: Context{Name: "dev", Insecure: true}, want: "HOST:PORT"},
		{name: "neither TLS nor insecure", ctx: Context{Name: "dev", Addr: "10.0.0.1:7700"}, want: "mark it insecure"},
		{name: "TLS and insecure", ctx: Context{Name: "dev", Addr: "10.0.0.1:7700", TLS: certs, Insecure: true}, want: "one or the other"},
		{name: "no key", ctx: Context{Name: "dev", Addr: "10.0.0.1:7700", TLS: pki.Files{CA: certs.CA, Cert: certs.Cert}}, want: "missing TLS key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.ctx.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: %v, want ErrInvalid saying %q", err, tt.want)
			}
		})
	}
	useTempFile(t)
	if err := Save(Context{Name: "dev", Addr: "nope"}, true); !errors.Is(err, ErrInvalid) {
		t.Errorf("Save of an invalid context: %v, want ErrInvalid", err)
	}
	if f, _ := Load(); len(f.Contexts) != 0 {
		t.Errorf("an invalid context was saved: %+v", f.Contexts)
	}
}

func TestUseAndRemove(t *testing.T) {
	tests := []struct {
		name        string
		op          func() error
		wantErr     error
		wantCurrent string
		wantNames   string
	}{
		{name: "use another", op: func() error { return Use("lab") }, wantCurrent: "lab", wantNames: "dev,lab"},
		{name: "use an unknown one", op: func() error { return Use("prod") }, wantErr: ErrNotFound, wantCurrent: "dev", wantNames: "dev,lab"},
		{name: "use none", op: func() error { return Use("") }, wantCurrent: "", wantNames: "dev,lab"},
		{name: "remove the current one", op: func() error { return Remove("dev") }, wantCurrent: "", wantNames: "lab"},
		{name: "remove another", op: func() error { return Remove("lab") }, wantCurrent: "dev", wantNames: "dev"},
		{name: "remove an unknown one", op: func() error { return Remove("prod") }, wantErr: ErrNotFound, wantCurrent: "dev", wantNames: "dev,lab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			useTempFile(t)
			if err := Save(Context{Name: "lab", Addr: "127.0.0.1:7700", Insecure: true}, false); err != nil {
				t.Fatal(err)
			}
			if err := Save(Context{Name: "dev", Addr: "10.0.0.1:7700", Insecure: true}, true); err != nil {
				t.Fatal(err)
			}
			err := tt.op()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "dev, lab") {
				t.Errorf("error %q does not list the known contexts", err)
			}
			f, err := Load()
			if err != nil {
				t.Fatal(err)
			}
			if f.CurrentName != tt.wantCurrent {
				t.Errorf("current %q, want %q", f.CurrentName, tt.wantCurrent)
			}
			if got := strings.Join(f.Names(), ","); got != tt.wantNames {
				t.Errorf("contexts %s, want %s", got, tt.wantNames)
			}
		})
	}
}

func TestABrokenFileIsReportedAndKept(t *testing.T) {
	tests := []struct {
		name, content, want string
	}{
		{name: "not JSON", content: "{current: dev", want: "fix it"},
		{name: "a newer version", content: `{"version": 99, "contexts": []}`, want: "newer godwit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := useTempFile(t)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load: %v, want an error naming %s and saying %q", err, path, tt.want)
			}
			if err := Save(Context{Name: "dev", Addr: "10.0.0.1:7700", Insecure: true}, true); err == nil {
				t.Error("Save over a broken file succeeded")
			}
			if got, _ := os.ReadFile(path); string(got) != tt.content {
				t.Errorf("the broken file was rewritten to %q", got)
			}
		})
	}
}

// TestConcurrentSavesAreAllKept saves from many goroutines at once: each
// update reads, changes and renames under the lock, so none is lost.
func TestConcurrentSavesAreAllKept(t *testing.T) {
	useTempFile(t)
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- Save(Context{Name: fmt.Sprintf("c%02d", i), Addr: "127.0.0.1:7700", Insecure: true}, i == 0)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	f, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Contexts) != n {
		t.Errorf("%d contexts kept, want %d: %v", len(f.Contexts), n, f.Names())
	}
	if f.CurrentName != "c00" {
		t.Errorf("current %q, want c00", f.CurrentName)
	}
}
