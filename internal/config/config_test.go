package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// settings are what the test daemon's RunE saw.
type settings struct {
	Name      string
	DataDir   string
	Expect    int
	Insecure  bool
	Join      []string
	Labels    []string
	Timeout   time.Duration
	Secret    string
	GlobalTLS string
}

// newDaemon is a command tree shaped like godwit's: a root with a
// persistent (global) flag and a daemon command with required flags, a
// list flag, a repeatable flag and a hidden one. run receives the
// settings RunE saw.
func newDaemon(run func(settings)) *cobra.Command {
	var s settings
	root := &cobra.Command{Use: "godwit", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().StringVar(&s.GlobalTLS, "tls-ca", "", "global")
	daemon := &cobra.Command{
		Use: "scheduler",
		RunE: func(*cobra.Command, []string) error {
			run(s)
			return nil
		},
	}
	f := daemon.Flags()
	f.StringVar(&s.Name, "name", "", "")
	f.StringVar(&s.DataDir, "data-dir", "", "")
	f.IntVar(&s.Expect, "bootstrap-expect", 0, "")
	f.BoolVar(&s.Insecure, "insecure", false, "")
	f.StringSliceVar(&s.Join, "join", []string{"default:7712"}, "")
	f.StringArrayVar(&s.Labels, "label", nil, "")
	f.DurationVar(&s.Timeout, "timeout", time.Minute, "")
	f.StringVar(&s.Secret, "test-timings", "", "")
	_ = f.MarkHidden("test-timings")
	_ = daemon.MarkFlagRequired("name")
	_ = daemon.MarkFlagRequired("data-dir")
	AddFlag(daemon)
	root.AddCommand(daemon)
	return root
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "scheduler.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func run(t *testing.T, args ...string) (settings, error) {
	t.Helper()
	var got settings
	root := newDaemon(func(s settings) { got = s })
	root.SetArgs(args)
	err := root.Execute()
	return got, err
}

func TestApply(t *testing.T) {
	const full = `
# a scheduler's settings
name: s1
data-dir: /var/lib/godwit/s1
bootstrap-expect: 3
insecure: true
join: [10.0.0.2:7712, 10.0.0.3:7712]
label:
  - zone=a
  - rack=r1,r2   # a comma stays inside one item of a list
timeout: 90s
`
	tests := []struct {
		name string
		file string
		args []string
		want settings
	}{
		{
			name: "every kind of value",
			file: full,
			want: settings{Name: "s1", DataDir: "/var/lib/godwit/s1", Expect: 3, Insecure: true,
				Join: []string{"10.0.0.2:7712", "10.0.0.3:7712"}, Labels: []string{"zone=a", "rack=r1,r2"}, Timeout: 90 * time.Second},
		},
		{
			name: "the command line wins",
			file: full,
			args: []string{"--name", "s9", "--join", "10.0.0.9:7712", "--bootstrap-expect=5", "--label", "zone=b"},
			want: settings{Name: "s9", DataDir: "/var/lib/godwit/s1", Expect: 5, Insecure: true,
				Join: []string{"10.0.0.9:7712"}, Labels: []string{"zone=b"}, Timeout: 90 * time.Second},
		},
		{
			name: "a comma-separated scalar for a list flag",
			file: "name: s1\ndata-dir: /d\njoin: 10.0.0.2:7712,10.0.0.3:7712\n",
			want: settings{Name: "s1", DataDir: "/d", Join: []string{"10.0.0.2:7712", "10.0.0.3:7712"}, Timeout: time.Minute},
		},
		{
			name: "unset keys keep their defaults, null is unset",
			file: "name: s1\ndata-dir: /d\nbootstrap-expect:\n",
			want: settings{Name: "s1", DataDir: "/d", Join: []string{"default:7712"}, Timeout: time.Minute},
		},
		{
			name: "a hidden flag can be set",
			file: "name: s1\ndata-dir: /d\ntest-timings: fast\n",
			want: settings{Name: "s1", DataDir: "/d", Join: []string{"default:7712"}, Timeout: time.Minute, Secret: "fast"},
		},
		{
			name: "an empty file sets nothing",
			file: "# nothing yet\n",
			args: []string{"--name", "s1", "--data-dir", "/d"},
			want: settings{Name: "s1", DataDir: "/d", Join: []string{"default:7712"}, Timeout: time.Minute},
		},
		{
			name: "anchors and aliases",
			file: "name: &n s1\ndata-dir: *n\n",
			want: settings{Name: "s1", DataDir: "s1", Join: []string{"default:7712"}, Timeout: time.Minute},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.file)
			got, err := run(t, append([]string{"scheduler", "--config", path}, tt.args...)...)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("settings\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestApplyRefuses(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		wantErr  error
		wantText []string
	}{
		{
			name: "unknown key", file: "name: s1\ndata-dri: /d\n", wantErr: ErrUnknownKey,
			// The key, its line, and the valid keys; not the hidden flag,
			// --config itself or the inherited global flag.
			wantText: []string{`"data-dri"`, ":2:", "bootstrap-expect, data-dir, insecure, join, label, name, timeout"},
		},
		{name: "an inherited global flag is not a key", file: "tls-ca: /ca.pem\n", wantErr: ErrUnknownKey, wantText: []string{`"tls-ca"`}},
		{name: "the config key itself", file: "config: /other.yaml\n", wantErr: ErrUnknownKey, wantText: []string{`"config"`}},
		{name: "not a number", file: "bootstrap-expect: three\n", wantErr: ErrInvalid, wantText: []string{"bootstrap-expect", ":1:", "three"}},
		{name: "yes is not a boolean", file: "insecure: yes\n", wantErr: ErrInvalid, wantText: []string{"insecure"}},
		{name: "a list for a single value", file: "bootstrap-expect: [1, 3]\n", wantErr: ErrInvalid, wantText: []string{"bootstrap-expect", "not a list"}},
		{name: "a mapping value", file: "label:\n  zone: a\n", wantErr: ErrInvalid, wantText: []string{"label", "not a mapping"}},
		{name: "a nested list item", file: "join:\n  - [a, b]\n", wantErr: ErrInvalid, wantText: []string{"join", "plain value"}},
		{name: "a key set twice", file: "name: a\nname: b\n", wantErr: ErrInvalid, wantText: []string{"twice", "line 1"}},
		{name: "not a mapping", file: "- name\n- s1\n", wantErr: ErrInvalid, wantText: []string{"mapping"}},
		{name: "not YAML", file: "name: [s1\n", wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.file)
			ran := false
			root := newDaemon(func(settings) { ran = true })
			root.SetArgs([]string{"scheduler", "--config", path, "--name", "s1", "--data-dir", "/d"})
			err := root.Execute()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("run: %v, want %v", err, tt.wantErr)
			}
			if ran {
				t.Error("the command ran despite a bad configuration file")
			}
			for _, s := range append(tt.wantText, path) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

func TestRequiredFlagsMayComeFromEither(t *testing.T) {
	if _, err := run(t, "scheduler", "--config", writeFile(t, "name: s1\n")); err == nil || !strings.Contains(err.Error(), "data-dir") {
		t.Fatalf("a required flag in neither: %v, want cobra's required-flag error naming data-dir", err)
	}
	got, err := run(t, "scheduler", "--config", writeFile(t, "name: s1\n"), "--data-dir", "/d")
	if err != nil || got.Name != "s1" || got.DataDir != "/d" {
		t.Fatalf("one required flag from each: %+v, %v", got, err)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := run(t, "scheduler", "--config", filepath.Join(t.TempDir(), "absent.yaml"), "--name", "s1", "--data-dir", "/d")
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing file: %v, want ErrNotExist", err)
	}
}

func TestNoConfigChangesNothing(t *testing.T) {
	got, err := run(t, "scheduler", "--name", "s1", "--data-dir", "/d")
	if err != nil {
		t.Fatal(err)
	}
	want := settings{Name: "s1", DataDir: "/d", Join: []string{"default:7712"}, Timeout: time.Minute}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("settings\n got %+v\nwant %+v", got, want)
	}
}

// A PreRunE the command had still runs, after the file is applied.
func TestAddFlagKeepsTheCommandsPreRun(t *testing.T) {
	for _, withErr := range []bool{true, false} {
		var seen string
		cmd := &cobra.Command{Use: "agent", RunE: func(*cobra.Command, []string) error { return nil }}
		name := cmd.Flags().String("name", "", "")
		if withErr {
			cmd.PreRunE = func(*cobra.Command, []string) error { seen = *name; return nil }
		} else {
			cmd.PreRun = func(*cobra.Command, []string) { seen = *name }
		}
		AddFlag(cmd)
		cmd.SetArgs([]string{"--config", writeFile(t, "name: n1\n")})
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		if seen != "n1" {
			t.Errorf("PreRunE=%v: the command's own pre-run saw name %q, want n1 from the file", withErr, seen)
		}
	}
}
