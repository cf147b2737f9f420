package snapshottest

import (
	"io/fs"
	"strings"
	"testing"
)

func TestMountedIn(t *testing.T) {
	const mountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /tmp/with\040space rw shared:20 - tmpfs tmpfs rw
41 22 0:36 / /tmp/plain rw shared:21 - tmpfs tmpfs rw
`
	cases := []struct {
		path string
		want bool
	}{
		{"/", true},
		{"/tmp/with space", true},
		{"/tmp/plain", true},
		{"/tmp", false},
		{"/tmp/with\\040space", false},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			if got := mountedIn(t, strings.NewReader(mountinfo), tc.path); got != tc.want {
				t.Errorf("mounted(%q) = %t, want %t", tc.path, got, tc.want)
			}
		})
	}
}

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
