package image

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/godwit/godwit/agent/archive"
)

// A transfer carries an image from a node that has it to one that lacks
// some of its layers (a migration's destination): a tar stream whose first
// member is the image's record (transferRecord) and whose other members
// are layers as the sender stores them, zstd-compressed, named by their
// uncompressed digest; an empty last member marks its end, so that a
// stream cut between two members is not taken for a whole one. The
// receiver trusts none of it: it checks every
// layer against its digest and the extraction policy before it records
// the image.
const (
	transferRecordName = "image.json"
	transferLayerDir   = "layers/sha256/"
	transferEndName    = "end"
)

// transferRecord is what a transfer says about the image; the node that
// receives it keeps the sender's name, ID, config and creation time.
type transferRecord struct {
	Name    string        `json:"name"`
	ID      digest.Digest `json:"id"`
	Format  Format        `json:"format"`
	Layers  []Layer       `json:"layers"`
	Config  Config        `json:"config"`
	Created time.Time     `json:"created"`
}

// TransferWriter writes a transfer: WriteImage once, then WriteLayer for
// each layer sent, then Close.
type TransferWriter struct {
	tw      *tar.Writer
	img     *Image
	started bool
}

// NewTransferWriter starts a transfer on w.
func NewTransferWriter(w io.Writer) *TransferWriter {
	return &TransferWriter{tw: tar.NewWriter(w)}
}

// WriteImage writes img's record, which must come first.
func (t *TransferWriter) WriteImage(img *Image) error {
	if t.started {
		return errors.New("image transfer: the image record must come first, once")
	}
	t.started = true
	data, err := json.Marshal(transferRecord{
		Name: img.Name, ID: img.ID, Format: img.Format, Layers: img.Layers, Config: img.Config, Created: img.Created,
	})
	if err != nil {
		return fmt.Errorf("image transfer: %w", err)
	}
	if err := t.tw.WriteHeader(transferHeader(transferRecordName, int64(len(data)))); err != nil {
		return fmt.Errorf("image transfer: %w", err)
	}
	if _, err := t.tw.Write(data); err != nil {
		return fmt.Errorf("image transfer: %w", err)
	}
	t.img = img
	return nil
}

// WriteLayer writes layer d: size bytes of r, its zstd-compressed tar as
// OpenStoredLayer returns it.
func (t *TransferWriter) WriteLayer(d digest.Digest, size int64, r io.Reader) error {
	if t.img == nil {
		return errors.New("image transfer: write the image record first")
	}
	if err := t.tw.WriteHeader(transferHeader(transferLayerDir+d.Encoded()+layerExt, size)); err != nil {
		return fmt.Errorf("image transfer: layer %s: %w", d, err)
	}
	n, err := io.Copy(t.tw, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("read %d of %d bytes", n, size)
	}
	if err != nil {
		return fmt.Errorf("image transfer: layer %s: %w", d, err)
	}
	return nil
}

// Close ends the transfer; it does not close the underlying writer.
func (t *TransferWriter) Close() error {
	if t.img == nil {
		return errors.New("image transfer: write the image record first")
	}
	if err := t.tw.WriteHeader(transferHeader(transferEndName, 0)); err != nil {
		return fmt.Errorf("image transfer: %w", err)
	}
	return t.tw.Close()
}

func transferHeader(name string, size int64) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: filePerm, Size: size, Format: tar.FormatPAX}
}

// OpenStoredLayer returns layer d as the store keeps it, zstd-compressed,
// and its size, for a transfer. Nothing is verified here: the receiver
// checks the content against d.
func (s *Store) OpenStoredLayer(d digest.Digest) (io.ReadCloser, int64, error) {
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return nil, 0, invalidf("layer digest %q is not a sha256 digest", d)
	}
	f, err := os.Open(s.layerPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("layer %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open layer %s: %w", d, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open layer %s: %w", d, err)
	}
	return f, st.Size(), nil
}

// Send writes a transfer of image ref with the layers listed in layers
// (each must be one of its layers) to w, reporting the layer bytes
// written out of their total when progress is set.
func (s *Store) Send(ctx context.Context, ref string, layers []digest.Digest, w io.Writer, progress func(done, total int64)) error {
	img, err := s.Get(ref)
	if err != nil {
		return err
	}
	var total int64
	sizes := make([]int64, len(layers))
	for i, d := range layers {
		if !slices.ContainsFunc(img.Layers, func(l Layer) bool { return l.Digest == d }) {
			return invalidf("layer %s is not a layer of image %s", d, img.Name)
		}
		rc, size, err := s.OpenStoredLayer(d)
		if err != nil {
			return err
		}
		rc.Close()
		sizes[i] = size
		total += size
	}
	tw := NewTransferWriter(w)
	if err := tw.WriteImage(img); err != nil {
		return err
	}
	var done int64
	for i, d := range layers {
		rc, size, err := s.OpenStoredLayer(d)
		if err != nil {
			return err
		}
		if size != sizes[i] {
			rc.Close()
			return fmt.Errorf("image transfer: layer %s changed size while it was sent", d)
		}
		var r io.Reader = contextReader{ctx: ctx, r: rc}
		if progress != nil {
			r = &progressReader{r: r, report: func(n int64) { progress(done+n, total) }}
		}
		err = tw.WriteLayer(d, size, r)
		rc.Close()
		if err != nil {
			return err
		}
		done += size
	}
	return tw.Close()
}

// progressReader reports how many bytes went through it.
type progressReader struct {
	r      io.Reader
	n      int64
	report func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if n > 0 {
		p.report(p.n)
	}
	return n, err
}

// Want is what the receiver of a transfer expects: the image's name and
// its layers, bottom first, as the sending node described them. A
// transfer of anything else is refused.
type Want struct {
	Name   string
	Layers []digest.Digest
}

// Receive reads a transfer from r and records the image it carries,
// which must be want. Every layer in it is checked against its digest
// (a wrong one is refused naming the layer) and the extraction policy
// before anything is recorded; layers the store has already are taken as
// they are, and every layer of the image must be here at the end. When
// the store already holds the image (by name, with want's layers), the
// transfer is read and nothing changes: a repeated transfer does nothing
// twice. On any error the store is left as it was.
func (s *Store) Receive(ctx context.Context, r io.Reader, want Want) (*Image, error) {
	img, err := s.receive(ctx, r, want)
	if err != nil {
		return nil, fmt.Errorf("receive image %s: %w", want.Name, err)
	}
	return img, nil
}

func (s *Store) receive(ctx context.Context, r io.Reader, want Want) (*Image, error) {
	r = contextReader{ctx: ctx, r: r}
	tr := tar.NewReader(r)
	hdr, err := tr.Next()
	if err != nil {
		return nil, invalidf("image transfer: %w: %w", archive.ErrTruncated, err)
	}
	if hdr.Name != transferRecordName || hdr.Typeflag != tar.TypeReg || hdr.Size > maxJSONSize {
		return nil, invalidf("image transfer: first member is %q, want the image record %s", hdr.Name, transferRecordName)
	}
	var rec transferRecord
	if err := json.NewDecoder(tr).Decode(&rec); err != nil {
		return nil, invalidf("image transfer: image record: %w", err)
	}
	img, err := checkRecord(rec, want)
	if err != nil {
		return nil, err
	}
	if have, err := s.Get(img.Name); err == nil && have.ID == img.ID && sameLayers(have.Layers, img.Layers) {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return nil, err
		}
		return have, nil // received before
	}
	s.mu.Lock()
	err = s.nameTaken(img.Name)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}

	stage, err := os.MkdirTemp(s.tmpDir(), "receive-")
	if err != nil {
		return nil, fmt.Errorf("create staging directory: %w", err)
	}
	defer os.RemoveAll(stage)
	sizes := make(map[digest.Digest]int64, len(img.Layers))
	for _, l := range img.Layers {
		sizes[l.Digest] = l.Size
	}
	staged := map[digest.Digest]string{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil, invalidf("image transfer: %w: it ends without its end marker", archive.ErrTruncated)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, invalidf("image transfer: %w: %w", archive.ErrTruncated, err)
		}
		if hdr.Name == transferEndName {
			break
		}
		hex, ok := strings.CutPrefix(hdr.Name, transferLayerDir)
		hex, ok2 := strings.CutSuffix(hex, layerExt)
		d := digest.NewDigestFromEncoded(digest.SHA256, hex)
		size, known := sizes[d]
		switch {
		case !ok || !ok2 || hdr.Typeflag != tar.TypeReg || d.Validate() != nil:
			return nil, invalidf("image transfer: unexpected member %q", hdr.Name)
		case !known:
			return nil, invalidf("image transfer: layer %s is not a layer of image %s", d, img.Name)
		case staged[d] != "":
			return nil, invalidf("image transfer: layer %s sent twice", d)
		}
		file, err := stageTransferLayer(ctx, stage, d, size, tr)
		if err != nil {
			return nil, err
		}
		staged[d] = file
	}
	// The end-of-archive blocks: the sender's last writes must not wait
	// on an unread connection.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, fmt.Errorf("image transfer: %w", err)
	}
	for _, l := range img.Layers {
		if staged[l.Digest] == "" && !s.HasLayer(l.Digest) {
			return nil, invalidf("image transfer: layer %s of image %s was not sent, and this node does not have it", l.Digest, img.Name)
		}
	}
	img.Imported = time.Now().UTC()
	if err := s.commit(img, staged); err != nil {
		return nil, err
	}
	s.log.Info("image received", "name", img.Name, "id", img.ID, "layers", len(img.Layers), "layers_received", len(staged))
	out := cloneImage(img)
	return &out, nil
}

// checkRecord turns a transfer's record into the image to store, refusing
// one that is not what the receiver wants or is malformed.
func checkRecord(rec transferRecord, want Want) (Image, error) {
	if err := validName(rec.Name); err != nil {
		return Image{}, err
	}
	if rec.Name != want.Name {
		return Image{}, invalidf("image transfer carries image %q, want %q", rec.Name, want.Name)
	}
	if err := rec.ID.Validate(); err != nil {
		return Image{}, invalidf("image transfer: image ID %q: %w", rec.ID, err)
	}
	got := make([]digest.Digest, len(rec.Layers))
	var size int64
	for i, l := range rec.Layers {
		if l.Digest.Validate() != nil || l.Digest.Algorithm() != digest.SHA256 || l.Size < 0 {
			return Image{}, invalidf("image transfer: layer %q is not a sha256 digest with a size", l.Digest)
		}
		got[i] = l.Digest
		size += l.Size
	}
	if len(got) == 0 || !slices.Equal(got, want.Layers) {
		return Image{}, invalidf("image transfer: image %s has layers %v, want %v", rec.Name, got, want.Layers)
	}
	switch rec.Format {
	case FormatOCI, FormatDocker, FormatRootfs:
	default:
		return Image{}, invalidf("image transfer: unknown image format %q", rec.Format)
	}
	return Image{
		Name: rec.Name, ID: rec.ID, Format: rec.Format, Layers: slices.Clone(rec.Layers), Config: rec.Config,
		Size: size, Created: rec.Created,
	}, nil
}

func sameLayers(a, b []Layer) bool {
	return slices.EqualFunc(a, b, func(x, y Layer) bool { return x.Digest == y.Digest })
}

// stageTransferLayer writes one received layer into the staging directory
// as it came (zstd-compressed) while it decompresses it, checks it against
// the extraction policy and hashes it. The content must hash to d and be
// size bytes long: a layer that does not is refused naming d, whatever
// else is wrong with it, since a changed layer is what the check is for.
func stageTransferLayer(ctx context.Context, stage string, d digest.Digest, size int64, r io.Reader) (string, error) {
	tmp := filepath.Join(stage, d.Encoded()+layerExt)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return "", fmt.Errorf("stage layer %s: %w", d, err)
	}
	defer f.Close()
	raw := &readErrTracker{r: io.TeeReader(r, f)}
	dec, err := zstd.NewReader(raw, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return "", fmt.Errorf("stage layer %s: %w", d, err)
	}
	defer dec.Close()
	digester := digest.SHA256.Digester()
	content := io.TeeReader(dec, digester.Hash())
	n, checkErr := archive.Check(ctx, content)
	// Hash to the end even when the check failed, so that a damaged layer
	// is named as such.
	rest, drainErr := io.Copy(io.Discard, content)
	n += rest
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if errors.Is(raw.err, io.ErrUnexpectedEOF) {
		return "", invalidf("layer %s: %w: the transfer ended inside it", d, archive.ErrTruncated)
	}
	if raw.err != nil {
		return "", fmt.Errorf("receive layer %s: %w", d, raw.err)
	}
	if _, err := io.Copy(io.Discard, raw); err != nil { // what follows the compressed stream
		return "", fmt.Errorf("receive layer %s: %w", d, err)
	}
	if got := digester.Digest(); drainErr == nil && got != d {
		return "", invalidf("layer %s refused: its content is %s (%d bytes): the sender's copy is damaged or not that layer", d, got, n)
	}
	switch {
	case drainErr != nil:
		return "", invalidf("layer %s refused: %w", d, drainErr)
	case checkErr != nil:
		return "", invalidf("layer %s refused: %w", d, checkErr)
	case n != size:
		return "", invalidf("layer %s refused: %d bytes, its record says %d", d, n, size)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("stage layer %s: %w", d, err)
	}
	return tmp, nil
}
