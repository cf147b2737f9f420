package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writePendingCheckpoint creates the sample checkpoint as a migration's
// source writes it: its manifest lists no digests.
func writePendingCheckpoint(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ckpt")
	writeFiles(t, dir, files)
	if err := WritePendingManifest(dir, sampleManifest()); err != nil {
		t.Fatalf("WritePendingManifest: %v", err)
	}
	return dir
}

func send(t *testing.T, dir string) []byte {
	t.Helper()
	return sendWith(t, dir, "")
}

// sendWith is send with the trailer's checksum c.
func sendWith(t *testing.T, dir string, c Checksum) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Send(context.Background(), dir, &buf, SendOptions{Checksum: c}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	return buf.Bytes()
}

// largeFiles are the sample files with a pages image of several chunks
// and files at a chunk's edges, so that both ways of copying a file (in
// one chunk, or read ahead) are taken.
func largeFiles() map[string][]byte {
	files := sampleFiles()
	pages := make([]byte, 2*copyBufferSize+12345)
	for i := range pages {
		pages[i] = byte(i * 7 / 3)
	}
	files["criu/pages-2.img"] = pages
	files["criu/pages-3.img"] = pages[:copyBufferSize]
	files["criu/pages-4.img"] = pages[:copyBufferSize+1]
	return files
}

func TestSendReceiveRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		files map[string][]byte
		// pending: the source wrote no digests (WritePendingManifest).
		pending bool
	}{
		{"digests pending", sampleFiles(), true},
		{"sealed", sampleFiles(), false},
		{"large files, digests pending", largeFiles(), true},
		{"large files, sealed", largeFiles(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The manifest a sealed checkpoint of these files has.
			sealed := filepath.Join(t.TempDir(), "sealed")
			writeFiles(t, sealed, tt.files)
			want := sampleManifest()
			if err := WriteManifest(sealed, want); err != nil {
				t.Fatal(err)
			}
			dir := sealed
			if tt.pending {
				dir = writePendingCheckpoint(t, tt.files)
			}
			var progress []int64
			var buf bytes.Buffer
			err := Send(context.Background(), dir, &buf, SendOptions{Progress: func(done, total int64) {
				if total != want.Size() {
					t.Errorf("progress total %d, want %d", total, want.Size())
				}
				progress = append(progress, done)
			}})
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if len(progress) == 0 || progress[len(progress)-1] != want.Size() {
				t.Errorf("progress ended at %v, want %d", progress, want.Size())
			}

			dest := filepath.Join(t.TempDir(), "received")
			got, receipt, err := Receive(context.Background(), &buf, dest)
			if err != nil {
				t.Fatalf("Receive: %v", err)
			}
			if !reflect.DeepEqual(got.Files, want.Files) || got.DigestsPending {
				t.Errorf("Receive returned files\n%+v\nwant the sealed checkpoint's\n%+v", got.Files, want.Files)
			}
			if src, dst := readTree(t, sealed), readTree(t, dest); !reflect.DeepEqual(src, dst) {
				t.Errorf("received tree differs from the sent one")
			}
			for name, verify := range map[string]func(string) (*Manifest, error){"Verify": Verify, "Receipt.Verify": receipt.Verify} {
				m, err := verify(dest)
				if err != nil {
					t.Fatalf("%s of the received checkpoint: %v", name, err)
				}
				if !reflect.DeepEqual(m, got) {
					t.Errorf("%s returned\n%+v\nwant what Receive returned\n%+v", name, m, got)
				}
			}
			if left, _ := os.ReadDir(filepath.Dir(dest)); len(left) != 1 {
				t.Errorf("the destination's parent holds %v, want the checkpoint alone", left)
			}
		})
	}
}

// transfer is a stream in the transfer framing built from its parts, so
// that a test can damage any of them consistently.
type transfer struct {
	magic    string
	manifest []byte
	// manifestSum is the manifest's sha256 as sent; nil: computed.
	manifestSum []byte
	files       [][]byte
	trailer     string
	sums        [][]byte
	extra       []byte
}

func (tr transfer) bytes() []byte {
	var b []byte
	b = append(b, tr.magic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(tr.manifest)))
	b = append(b, tr.manifest...)
	sum := tr.manifestSum
	if sum == nil {
		s := sha256.Sum256(tr.manifest)
		sum = s[:]
	}
	b = append(b, sum...)
	for _, f := range tr.files {
		b = append(b, f...)
	}
	b = append(b, tr.trailer...)
	for _, s := range tr.sums {
		b = append(b, s...)
	}
	return append(b, tr.extra...)
}

// parseTransfer splits a stream Send wrote into its parts.
func parseTransfer(t *testing.T, b []byte) transfer {
	t.Helper()
	tr := transfer{magic: string(b[:len(transferMagic)])}
	b = b[len(transferMagic):]
	n := binary.BigEndian.Uint32(b)
	tr.manifest, b = b[4:4+n:4+n], b[4+n+sha256.Size:]
	m, err := parseManifest(tr.manifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		// Capped, so that appending to a part never writes into the next.
		tr.files, b = append(tr.files, b[:f.Size:f.Size]), b[f.Size:]
	}
	fr := framingSHA256
	if tr.magic == transferMagicCRC {
		fr = framingCRC32C
	}
	size := fr.newHash().Size()
	tr.trailer, b = string(b[:len(fr.trailer)]), b[len(fr.trailer):]
	for range m.Files {
		tr.sums, b = append(tr.sums, b[:size:size]), b[size:]
	}
	if len(b) != 0 {
		t.Fatalf("%d bytes after the trailer", len(b))
	}
	return tr
}

// with returns a deep enough copy of tr for edit to change.
func (tr transfer) with(edit func(*transfer)) transfer {
	c := tr
	c.files = append([][]byte(nil), tr.files...)
	c.sums = append([][]byte(nil), tr.sums...)
	edit(&c)
	return c
}

func TestReceiveRefuses(t *testing.T) {
	pending := writePendingCheckpoint(t, sampleFiles())
	sealed, _ := writeCheckpoint(t)
	stream := send(t, pending)
	tr := parseTransfer(t, stream)
	sealedTr := parseTransfer(t, send(t, sealed))
	crcStream := sendWith(t, pending, ChecksumCRC32C)
	crcTr := parseTransfer(t, crcStream)
	m, err := parseManifest(tr.manifest)
	if err != nil {
		t.Fatal(err)
	}
	index := func(name string) int {
		for i, f := range m.Files {
			if f.Path == name {
				return i
			}
		}
		t.Fatalf("no file %s", name)
		return -1
	}
	pages := index("criu/pages-1.img")
	// pagesAt is where the pages image starts in the stream.
	pagesAt := bytes.Index(stream, tr.files[pages][:64])
	trailerAt := bytes.LastIndex(stream, []byte(trailerMagic))
	editManifest := func(tr transfer, edit func(*Manifest)) transfer {
		mm, err := parseManifest(tr.manifest)
		if err != nil {
			t.Fatal(err)
		}
		edit(mm)
		return tr.with(func(c *transfer) { c.manifest = marshal(t, mm) })
	}

	tests := []struct {
		name   string
		stream []byte
		want   error
		frags  []string
	}{
		{"bit flipped in an image on the way", flipBit(stream, pagesAt+5000),
			ErrCorrupt, []string{"criu/pages-1.img", "sha256 mismatch: the sender read", "migration aborts"}},
		{"bit flipped in a sealed checkpoint's image", sealedTr.with(func(c *transfer) { c.files[pages] = flipBit(c.files[pages], 10) }).bytes(),
			ErrCorrupt, []string{"criu/pages-1.img", "sha256 mismatch: manifest says"}},
		{"bit flipped in the manifest", flipBit(stream, len(transferMagic)+4+40),
			ErrCorrupt, []string{ManifestName, "sha256 mismatch"}},
		{"bit flipped in the manifest's digest", flipBit(stream, len(transferMagic)+4+len(tr.manifest)+3),
			ErrCorrupt, []string{ManifestName, "sha256 mismatch"}},
		{"bit flipped in a trailer digest", flipBit(stream, trailerAt+len(trailerMagic)+pages*sha256.Size+7),
			ErrCorrupt, []string{"criu/pages-1.img", "sha256 mismatch: the sender read"}},
		{"trailer digests swapped", tr.with(func(c *transfer) { c.sums[0], c.sums[1] = c.sums[1], c.sums[0] }).bytes(),
			ErrCorrupt, []string{m.Files[0].Path, "sha256 mismatch"}},
		{"trailer magic damaged", flipBit(stream, trailerAt+2),
			ErrCorrupt, []string{"checksums that must follow the last file are not there"}},
		{"file longer than listed", tr.with(func(c *transfer) { c.files[pages] = append(c.files[pages], 0) }).bytes(),
			ErrCorrupt, nil},
		{"file shorter than listed", tr.with(func(c *transfer) { c.files[pages] = c.files[pages][1:] }).bytes(),
			ErrCorrupt, nil},
		{"trailer missing", stream[:trailerAt],
			ErrCorrupt, []string{"truncated"}},
		{"one trailer digest missing", stream[:len(stream)-sha256.Size],
			ErrCorrupt, []string{"the checksums after the last file", "truncated"}},
		{"data after the trailer", append(append([]byte(nil), stream...), 0),
			ErrCorrupt, []string{"unexpected data after the checksums"}},
		{"empty stream", nil,
			ErrCorrupt, []string{"the stream's head", "truncated"}},
		{"an exported archive", export(t, sealed, ExportOptions{Compression: NoCompression}),
			ErrCorrupt, []string{"does not start as a godwit migration transfer"}},
		{"another version", tr.with(func(c *transfer) { c.magic = "GODWIT-TRANSFER/3\n" }).bytes(),
			ErrCorrupt, []string{"GODWIT-TRANSFER/3", "this version"}},
		{"bit flipped in an image, checked with CRC-32C", crcTr.with(func(c *transfer) { c.files[pages] = flipBit(c.files[pages], 5000) }).bytes(),
			ErrCorrupt, []string{"criu/pages-1.img", "crc32c mismatch: the sender read", "migration aborts"}},
		{"bit flipped in a CRC-32C of the trailer", crcTr.with(func(c *transfer) { c.sums[pages] = flipBit(c.sums[pages], 1) }).bytes(),
			ErrCorrupt, []string{"criu/pages-1.img", "crc32c mismatch"}},
		{"CRC-32C trailer cut short", crcStream[:len(crcStream)-2],
			ErrCorrupt, []string{"the checksums after the last file", "truncated"}},
		{"a sealed checkpoint checked with CRC-32C", sealedTr.with(func(c *transfer) {
			c.magic, c.trailer = transferMagicCRC, trailerMagicCRC
			c.sums = crcTr.sums
		}).bytes(), ErrInvalidManifest, []string{ManifestName, "CRC-32C", "pending"}},
		{"manifest larger than allowed", binary.BigEndian.AppendUint32([]byte(transferMagic), maxManifestSize+1),
			ErrInvalidManifest, []string{ManifestName, "larger than"}},
		{"manifest listing a file outside the checkpoint", editManifest(tr, func(m *Manifest) {
			m.Files[0].Path = "../escape"
		}).bytes(), ErrInvalidManifest, []string{"../escape", "escapes"}},
		{"manifest of an unknown version", editManifest(tr, func(m *Manifest) { m.FormatVersion = 9 }).bytes(),
			ErrUnsupportedVersion, []string{"format_version 9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dest := filepath.Join(parent, "received")
			m, receipt, err := Receive(context.Background(), bytes.NewReader(tt.stream), dest)
			wantRefused(t, err, tt.want, tt.frags...)
			if m != nil || receipt != nil {
				t.Errorf("refused transfer returned a manifest or a receipt")
			}
			if left, _ := os.ReadDir(parent); len(left) != 0 {
				t.Errorf("refused transfer left %v behind in the destination's parent", left)
			}
		})
	}
}

// TestReceiveRefusesEveryTruncation cuts the stream at and around every
// boundary of its framing, and at points inside each part: every cut is
// refused as truncated, and leaves nothing behind.
func TestReceiveRefusesEveryTruncation(t *testing.T) {
	for _, c := range ReceivedChecksums() {
		t.Run(string(c), func(t *testing.T) {
			stream := sendWith(t, writePendingCheckpoint(t, largeFiles()), c)
			tr := parseTransfer(t, stream)
			var bounds []int
			at := len(tr.magic)
			bounds = append(bounds, at, at+4)
			at += 4 + len(tr.manifest)
			bounds = append(bounds, at, at+sha256.Size/2)
			at += sha256.Size
			for _, f := range tr.files {
				bounds = append(bounds, at, at+len(f)/2)
				at += len(f)
			}
			bounds = append(bounds, at, at+len(tr.trailer))
			at += len(tr.trailer)
			for _, sum := range tr.sums {
				at += len(sum)
				bounds = append(bounds, at)
			}
			if at != len(stream) {
				t.Fatalf("parts add up to %d bytes, the stream has %d", at, len(stream))
			}
			cuts := map[int]bool{}
			for _, b := range bounds {
				for _, c := range []int{b - 1, b, b + 1} {
					if c >= 0 && c < len(stream) {
						cuts[c] = true
					}
				}
			}
			for cut := range cuts {
				t.Run(fmt.Sprint(cut), func(t *testing.T) {
					parent := t.TempDir()
					_, _, err := Receive(context.Background(), bytes.NewReader(stream[:cut]), filepath.Join(parent, "received"))
					wantRefused(t, err, ErrCorrupt, "truncated")
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Errorf("error %q does not match io.ErrUnexpectedEOF", err)
					}
					if left, _ := os.ReadDir(parent); len(left) != 0 {
						t.Errorf("left %v behind", left)
					}
				})
			}
		})
	}
}

// TestCRC32CTransfer: a checkpoint whose digests are pending goes with
// CRC-32C checksums and arrives byte for byte, unsealed: its receipt
// vouches for it without a pass over its files, and nothing else does. A
// sealed one goes with its digests whatever the sender asks.
func TestCRC32CTransfer(t *testing.T) {
	files := largeFiles()
	stream := sendWith(t, writePendingCheckpoint(t, files), ChecksumCRC32C)
	if !bytes.HasPrefix(stream, []byte(transferMagicCRC)) {
		t.Fatalf("stream opens with %q, want %q", stream[:len(transferMagicCRC)], transferMagicCRC)
	}
	dest := filepath.Join(t.TempDir(), "received")
	got, receipt, err := Receive(context.Background(), bytes.NewReader(stream), dest)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if !got.DigestsPending {
		t.Error("the received manifest is sealed, want its digests pending")
	}
	received := readTree(t, dest)
	delete(received, ManifestName)
	if len(received) != len(files) {
		t.Errorf("received %d files, sent %d", len(received), len(files))
	}
	for name, data := range files {
		if !bytes.Equal(received[name], data) {
			t.Errorf("received %s differs from the sent one", name)
		}
	}

	verifiesUndigested(t, receipt, dest, got)
	var none *Receipt
	_, err = none.Verify(dest)
	wantRefused(t, err, ErrUnsealed, ManifestName)

	time.Sleep(20 * time.Millisecond) // past a coarse clock tick (fileStamp)
	flipFile(t, filepath.Join(dest, "criu", "pages-2.img"), 10)
	_, err = receipt.Verify(dest)
	wantRefused(t, err, ErrCorrupt, "criu/pages-2.img", "no digest covers it")

	sealed, _ := writeCheckpoint(t)
	if s := sendWith(t, sealed, ChecksumCRC32C); !bytes.HasPrefix(s, []byte(transferMagic)) {
		t.Errorf("a sealed checkpoint went as %q, want %q", s[:len(transferMagic)], transferMagic)
	}
	if err := Send(context.Background(), sealed, io.Discard, SendOptions{Checksum: "md5"}); err == nil || !strings.Contains(err.Error(), "md5") {
		t.Errorf("Send with an unknown checksum: %v, want it refused naming it", err)
	}
}

// TestReceiveNamesAReadError: a connection that fails mid-file is
// reported with the file it cut, not as a digest mismatch.
func TestReceiveNamesAReadError(t *testing.T) {
	stream := send(t, writePendingCheckpoint(t, largeFiles()))
	cut := errors.New("connection reset by peer")
	r := io.MultiReader(bytes.NewReader(stream[:len(stream)/2]), iotestErrReader{cut})
	_, _, err := Receive(context.Background(), r, filepath.Join(t.TempDir(), "received"))
	wantRefused(t, err, ErrCorrupt, "criu/pages-2.img", "connection reset by peer")
	if !errors.Is(err, cut) {
		t.Errorf("error %q does not wrap the read error", err)
	}
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

func TestReceiveHonoursContext(t *testing.T) {
	stream := send(t, writePendingCheckpoint(t, sampleFiles()))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	parent := t.TempDir()
	_, _, err := Receive(ctx, bytes.NewReader(stream), filepath.Join(parent, "received"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Receive with a cancelled context: %v, want context.Canceled", err)
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("left %v behind", left)
	}
}

func TestReceiveRefusesExistingDest(t *testing.T) {
	stream := send(t, writePendingCheckpoint(t, sampleFiles()))
	dest := t.TempDir()
	_, _, err := Receive(context.Background(), bytes.NewReader(stream), dest)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("Receive into an existing directory: %v, want ErrExists", err)
	}
}

func TestSendRefusesDamagedCheckpoint(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   error
		frags  []string
	}{
		{"file truncated", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "criu", "pages-1.img"), 10); err != nil {
				t.Fatal(err)
			}
		}, ErrCorrupt, []string{"criu/pages-1.img", "size mismatch"}},
		{"file added", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string][]byte{"criu/late.img": []byte("x")})
		}, ErrCorrupt, []string{"criu/late.img", "not listed"}},
		{"file removed", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "criu", "core-1.img"))
		}, ErrCorrupt, []string{"criu/core-1.img", "missing"}},
		{"listed file replaced by a symlink", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "criu", "core-1.img")
			os.Remove(p)
			symlink(t, "/etc/passwd", p)
		}, ErrUnsafe, []string{"criu/core-1.img", "symlink"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writePendingCheckpoint(t, sampleFiles())
			tt.damage(t, dir)
			err := Send(context.Background(), dir, io.Discard, SendOptions{})
			wantRefused(t, err, tt.want, tt.frags...)
		})
	}
}

// flipBit returns a copy of b with its lowest bit at offset i inverted,
// as the corrupt-send failpoint does.
func flipBit(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x01
	return c
}

// TestOpenTransferTellsTheSizeFirst: a receiver learns the manifest, and
// so the size, before it chooses where the files go.
func TestOpenTransferTellsTheSizeFirst(t *testing.T) {
	dir := writePendingCheckpoint(t, largeFiles())
	want, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	in, err := OpenTransfer(context.Background(), bytes.NewReader(send(t, dir)))
	if err != nil {
		t.Fatalf("OpenTransfer: %v", err)
	}
	if got := in.Manifest(); got.Size() != want.Size() || !got.DigestsPending {
		t.Errorf("the opened transfer's manifest lists %d bytes (digests pending: %v), want %d, pending", got.Size(), got.DigestsPending, want.Size())
	}
	dest := filepath.Join(t.TempDir(), "received")
	if _, _, err := in.ReceiveInto(context.Background(), dest); err != nil {
		t.Fatalf("ReceiveInto: %v", err)
	}
	if _, err := Verify(dest); err != nil {
		t.Errorf("Verify: %v", err)
	}
}
