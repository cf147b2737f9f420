package criuimg

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v7/magic"
	"google.golang.org/protobuf/proto"
)

func TestInspectFixture(t *testing.T) {
	dir := t.TempDir()
	want := writeFixture(t, dir)
	got, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("report", func(t *testing.T) {
		g := *got
		g.Stats, g.Warnings = nil, nil
		if !reflect.DeepEqual(&g, want) {
			gj, _ := json.MarshalIndent(&g, "", "  ")
			wj, _ := json.MarshalIndent(want, "", "  ")
			t.Errorf("got\n%s\nwant\n%s", gj, wj)
		}
	})

	t.Run("stats", func(t *testing.T) {
		if got.Stats == nil || got.Stats.Dump == nil || got.Stats.Restore == nil {
			t.Fatalf("stats %+v: want dump and restore", got.Stats)
		}
		if *got.Stats.Dump != realDumpStats {
			t.Errorf("dump stats %+v, want %+v", *got.Stats.Dump, realDumpStats)
		}
		if got.Stats.ImageBytes != sumFiles(t, dir) {
			t.Errorf("image bytes %d, want %d", got.Stats.ImageBytes, sumFiles(t, dir))
		}
	})

	t.Run("warnings say why a command line is missing", func(t *testing.T) {
		wantWarnings := []string{
			"pid 3: no command line (its pages were left for lazy restore)",
			"pid 4: no command line (its pages are in the pre-dump parent's images)",
		}
		if len(got.Warnings) != len(wantWarnings) {
			t.Fatalf("warnings %q, want %d", got.Warnings, len(wantWarnings))
		}
		for i, w := range wantWarnings {
			if !strings.HasPrefix(got.Warnings[i], w) {
				t.Errorf("warning %q, want it to start with %q", got.Warnings[i], w)
			}
		}
	})

	t.Run("text", func(t *testing.T) {
		var buf bytes.Buffer
		if err := got.WriteText(&buf); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		for _, line := range []string{
			"1 /bin/sh -c sleep 1000 & nc -l -p 8080",
			"├─ 2 sleep 1000",
			"│  └─ 6 [zombie]",
			"├─ 3 [lazy]",
			"├─ 4 [pre]",
			"└─ 5 [zombie]",
		} {
			if !strings.Contains(out, line+"\n") {
				t.Errorf("tree lacks line %q", line)
			}
		}
		for _, want := range []string{
			"Process tree (memory 40.0 KiB)", // 10 pages of 4 KiB
			"0.0.0.0:8080 LISTEN",
			"TCP6", "[::1]:8080 -> [::1]:40000 ESTABLISHED",
			"UDP", "10.0.0.5:53",
			"stream @godwit LISTEN",
			"anon_inode:[pidfd]",
			"/etc/hosts", "(external)", "fuse.sshfs",
			"frozen time", "126.557ms", "restore time", "85ms",
			"pid 3: no command line",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("text lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("text:\n%s", out)
		}
	})

	t.Run("json", func(t *testing.T) {
		data, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{`"frozen_time_ns":126557000`, `"pages_written":318`, `"state":"ESTABLISHED"`, `"cmdline":["sleep","1000"]`} {
			if !bytes.Contains(data, []byte(key)) {
				t.Errorf("json lacks %s", key)
			}
		}
	})
}

func TestInspectRefusesBadImages(t *testing.T) {
	magics := magic.LoadMagic()
	frame := func(payloadLen uint32, payload []byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, uint32(magics.ByName[magicImgCommon]))
		b = binary.LittleEndian.AppendUint32(b, uint32(magics.ByName[magicPstree]))
		b = binary.LittleEndian.AppendUint32(b, payloadLen)
		return append(b, payload...)
	}
	writePstree := func(data []byte) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "pstree.img"), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		wantErr error
	}{
		{name: "empty directory", setup: func(*testing.T, string) {}, wantErr: ErrNotImageDir},
		{name: "no such directory", setup: func(t *testing.T, dir string) { os.Remove(dir) }, wantErr: fs.ErrNotExist},
		{name: "entry longer than the file", setup: writePstree(frame(100, []byte{8, 1})), wantErr: ErrMalformedImage},
		{name: "entry claiming 4 GiB", setup: writePstree(frame(math.MaxUint32, nil)), wantErr: ErrMalformedImage},
		{name: "truncated length", setup: writePstree(frame(2, []byte{8, 1, 0xff})), wantErr: ErrMalformedImage},
		{name: "bad magic", setup: writePstree([]byte{1, 2, 3, 4, 5, 6, 7, 8}), wantErr: ErrMalformedImage},
		{name: "not protobuf", setup: writePstree(frame(3, []byte{0xff, 0xff, 0xff})), wantErr: ErrMalformedImage},
		{
			name: "image of another kind",
			setup: func(t *testing.T, dir string) {
				writeFixture(t, dir)
				copyFile(t, filepath.Join(dir, "core-1.img"), filepath.Join(dir, "pstree.img"))
			},
			wantErr: ErrMalformedImage,
		},
		{
			name: "process without its core image",
			setup: func(t *testing.T, dir string) {
				writeFixture(t, dir)
				os.Remove(filepath.Join(dir, "core-2.img"))
			},
			wantErr: fs.ErrNotExist,
		},
		{
			name: "symlink out of the directory",
			setup: func(t *testing.T, dir string) {
				outside := t.TempDir()
				writeImage(t, outside, "pstree.img", magicPstree, &pstree.PstreeEntry{Pid: proto.Uint32(1)})
				if err := os.Symlink(filepath.Join(outside, "pstree.img"), filepath.Join(dir, "pstree.img")); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: nil, // any error: the image outside must not be read
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			r, err := Inspect(dir)
			if err == nil {
				t.Fatalf("Inspect made a report: %+v", r)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestCommandLineIsBounded(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	// A crafted mm image claiming a huge argument area: Inspect reads at
	// most maxCmdlineBytes and says so.
	page := int(pageSize)
	huge := make([]byte, maxCmdlineBytes+page)
	for i := range huge {
		huge[i] = 'a'
	}
	if err := os.WriteFile(filepath.Join(dir, "pages-2.img"), huge, 0o644); err != nil {
		t.Fatal(err)
	}
	writeImage(t, dir, "pagemap-2.img", magicPagemap,
		&pagemap.PagemapHead{PagesId: proto.Uint32(2)},
		withNrPages64(&pagemap.PagemapEntry{Vaddr: proto.Uint64(fxArgPage), Flags: proto.Uint32(pagePresent)}, uint64(len(huge)/page)))
	writeImage(t, dir, "mm-2.img", magicMM, &mm.MmEntry{
		ExeFileId: proto.Uint32(fxExeID), MmArgStart: proto.Uint64(fxArgPage), MmArgEnd: proto.Uint64(math.MaxUint64),
	})
	r, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := r.Processes[1]
	if len(p.Cmdline) != 1 || len(p.Cmdline[0]) != maxCmdlineBytes {
		t.Errorf("cmdline of %d args, want one of %d bytes", len(p.Cmdline), maxCmdlineBytes)
	}
	if !strings.Contains(strings.Join(r.Warnings, "\n"), "pid 2: command line cut") {
		t.Errorf("warnings %q lack the cut command line", r.Warnings)
	}
}

// failingWriter fails every write.
type failingWriter struct{}

var errWrite = errors.New("disk full")

func (failingWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestWriteTextReportsWriteErrors(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	r, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteText(failingWriter{}); !errors.Is(err, errWrite) {
		t.Errorf("err %v, want %v", err, errWrite)
	}
}
