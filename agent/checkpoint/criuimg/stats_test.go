package criuimg

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/stats"
	"google.golang.org/protobuf/proto"
)

func TestReadStats(t *testing.T) {
	restore := &RestoreStats{ForkingTime: 1500 * time.Microsecond, RestoreTime: 85 * time.Millisecond, PagesCompared: 4, PagesSkippedCOW: 2, PagesRestored: 300}
	writeRestore := func(t *testing.T, dir string) {
		writeImage(t, dir, crit.StatsRestore, magicStats, &stats.StatsEntry{Restore: &stats.RestoreStatsEntry{
			ForkingTime: proto.Uint32(1500), RestoreTime: proto.Uint32(85000), PagesCompared: proto.Uint64(4),
			PagesSkippedCow: proto.Uint64(2), PagesRestored: proto.Uint64(300),
		}})
	}
	writeDump := func(t *testing.T, dir string) { copyFile(t, realStatsDump, filepath.Join(dir, crit.StatsDump)) }
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		want    *Stats // ImageBytes is checked against the directory
		wantErr error
	}{
		{
			name:  "dump stats written by CRIU 4.2",
			setup: writeDump,
			want:  &Stats{Dump: &realDumpStats},
		},
		{
			name:  "dump and restore",
			setup: func(t *testing.T, dir string) { writeDump(t, dir); writeRestore(t, dir) },
			want:  &Stats{Dump: &realDumpStats, Restore: restore},
		},
		{
			name: "no stats files: only the size",
			setup: func(t *testing.T, dir string) {
				if err := os.WriteFile(filepath.Join(dir, "pages-1.img"), make([]byte, 3*pageSize), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: &Stats{},
		},
		{
			name: "a pre-dump parent is not counted",
			setup: func(t *testing.T, dir string) {
				writeDump(t, dir)
				parent := t.TempDir()
				if err := os.WriteFile(filepath.Join(parent, "pages-1.img"), make([]byte, pageSize), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(parent, filepath.Join(dir, "parent")); err != nil {
					t.Fatal(err)
				}
			},
			want: &Stats{Dump: &realDumpStats},
		},
		{
			name: "truncated stats-dump",
			setup: func(t *testing.T, dir string) {
				data, err := os.ReadFile(realStatsDump)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, crit.StatsDump), data[:len(data)-3], 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrMalformedImage,
		},
		{
			name: "stats-dump that is another image",
			setup: func(t *testing.T, dir string) {
				writeImage(t, dir, crit.StatsDump, magicPstree, &pstree.PstreeEntry{Pid: proto.Uint32(1)})
			},
			wantErr: ErrMalformedImage,
		},
		{
			name: "stats-dump with no entry",
			setup: func(t *testing.T, dir string) {
				writeImage(t, dir, crit.StatsDump, magicStats)
			},
			wantErr: ErrMalformedImage,
		},
		{
			name:    "no such directory",
			setup:   func(t *testing.T, dir string) { os.Remove(dir) },
			wantErr: fs.ErrNotExist,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			got, err := ReadStats(dir)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.want.ImageBytes = sumFiles(t, dir)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
				if got.Dump != nil {
					t.Errorf("dump %+v", *got.Dump)
				}
			}
		})
	}
}
