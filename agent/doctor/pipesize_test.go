package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRaisePipeMaxSize(t *testing.T) {
	tests := []struct {
		name          string
		content       string
		before, after int
		written       string
		errFrag       string
	}{
		{name: "too small is raised", content: "1048576\n", before: 1 << 20, after: 4 << 20, written: "4194304"},
		{name: "large enough is left alone", content: "8388608\n", before: 8 << 20, after: 8 << 20, written: "8388608\n"},
		{name: "unreadable value", content: "lots\n", errFrag: "parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pipe-max-size")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			before, after, err := raisePipeMaxSize(path, criuPipeSize)
			if tt.errFrag != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errFrag) {
					t.Fatalf("err = %v, want one saying %q", err, tt.errFrag)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			if before != tt.before || after != tt.after || string(got) != tt.written {
				t.Errorf("before %d after %d file %q; want %d, %d, %q", before, after, got, tt.before, tt.after, tt.written)
			}
		})
	}
	if _, _, err := raisePipeMaxSize(filepath.Join(t.TempDir(), "missing"), criuPipeSize); err == nil {
		t.Error("a missing sysctl file gave no error")
	}
}
