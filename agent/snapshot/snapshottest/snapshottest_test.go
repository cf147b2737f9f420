package snapshottest

import (
	"io/fs"
	"strings"
	"testing"
)

func TestTreeDiff(t *testing.T) {
	file := Node{Mode: 0o644, Content: "x"}
	cases := []struct {
		name      string
		got, want map[string]Node
		wantLines []string
	}{
		{"same", map[string]Node{"a": file}, map[string]Node{"a": file}, nil},
		{"missing", map[string]Node{}, map[string]Node{"a": file}, []string{"a: missing"}},
		{"unexpected", map[string]Node{"a": file}, map[string]Node{}, []string{"a: unexpected"}},
		{"mode differs", map[string]Node{"a": {Mode: 0o600, Content: "x"}}, map[string]Node{"a": file}, []string{"a: got -rw-------"}},
		{"symlink target differs", map[string]Node{"l": {Mode: fs.ModeSymlink | 0o777, Target: "b"}}, map[string]Node{"l": {Mode: fs.ModeSymlink | 0o777, Target: "a"}}, []string{"-> b, want", "-> a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := TreeDiff(tc.got, tc.want)
			if (d == "") != (tc.wantLines == nil) {
				t.Fatalf("TreeDiff = %q", d)
			}
			for _, l := range tc.wantLines {
				if !strings.Contains(d, l) {
					t.Errorf("TreeDiff = %q, want it to mention %q", d, l)
				}
			}
		})
	}
}
