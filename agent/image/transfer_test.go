package image

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// transferSource is a store holding the two-layer test image "app", and
// what a receiver wants of it.
func transferSource(t *testing.T) (*Store, *Image, Want) {
	t.Helper()
	s, _ := openStore(t)
	img := mustImport(t, s, buildOCI(t, imageSpec{layers: [][]byte{baseLayer(t), topLayer(t)}}), "app")
	want := Want{Name: img.Name}
	for _, l := range img.Layers {
		want.Layers = append(want.Layers, l.Digest)
	}
	return s, img, want
}

// send is a transfer of img with the layers named.
func send(t *testing.T, s *Store, img *Image, layers ...digest.Digest) []byte {
	t.Helper()
	var buf bytes.Buffer
	var last, total int64
	err := s.Send(t.Context(), img.Name, layers, &buf, func(done, all int64) { last, total = done, all })
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(layers) > 0 && (last != total || total == 0) {
		t.Errorf("progress ended at %d of %d, want all of a non-zero total", last, total)
	}
	return buf.Bytes()
}

// TestTransferRoundTrip sends the image to an empty store and to one that
// shares its base layer: the receiver records the sender's image (name,
// ID, layers, config) and its layers unpack to the same files.
func TestTransferRoundTrip(t *testing.T) {
	src, img, want := transferSource(t)
	cases := []struct {
		name string
		// has builds what the receiving store holds first.
		has  func(t *testing.T, s *Store)
		sent []digest.Digest
	}{
		{name: "empty receiver gets every layer", sent: want.Layers},
		{
			name: "receiver with the base layer gets the top one",
			has: func(t *testing.T, s *Store) {
				mustImport(t, s, buildOCI(t, imageSpec{layers: [][]byte{baseLayer(t)}}), "base-only")
			},
			sent: want.Layers[1:],
		},
		{
			name: "receiver with every layer gets the record alone",
			has: func(t *testing.T, s *Store) {
				mustImport(t, s, buildOCI(t, imageSpec{layers: [][]byte{baseLayer(t), topLayer(t)}}), "twin")
			},
			sent: nil,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst, _ := openStore(t)
			if tc.has != nil {
				tc.has(t, dst)
				if !dst.HasLayer(want.Layers[0]) {
					t.Fatal("the receiver was to share the base layer")
				}
			}
			got, err := dst.Receive(t.Context(), bytes.NewReader(send(t, src, img, tc.sent...)), want)
			if err != nil {
				t.Fatalf("Receive: %v", err)
			}
			if got.Name != img.Name || got.ID != img.ID || got.Format != img.Format || got.Size != img.Size ||
				!reflect.DeepEqual(got.Layers, img.Layers) || !reflect.DeepEqual(got.Config, img.Config) || !got.Created.Equal(img.Created) {
				t.Errorf("received %+v, want the sender's %+v", got, img)
			}
			stored, err := dst.Get(img.Name)
			if err != nil || stored.ID != img.ID {
				t.Fatalf("the receiver's store has %v, %v; want image %s recorded", stored, err, img.ID)
			}
			if _, files := unpack(t, dst, stored); !maps.Equal(files, layeredFiles) {
				t.Errorf("received image unpacks to %q, want %q", files, layeredFiles)
			}
		})
	}
}

// TestTransferRefusesWhatItDidNotAskFor: a damaged or substituted layer is
// refused naming its digest, as are a transfer of another image, one that
// leaves a layer out and a cut stream; the receiving store is left exactly
// as it was.
func TestTransferRefusesWhatItDidNotAskFor(t *testing.T) {
	src, img, want := transferSource(t)
	base, top := want.Layers[0], want.Layers[1]
	good := send(t, src, img, base, top)
	// tampered is a transfer whose top layer is the base layer's content,
	// compressed anew: valid zstd, a valid tar, not the layer it claims.
	tampered := func(t *testing.T) []byte {
		var buf bytes.Buffer
		tw := NewTransferWriter(&buf)
		must(t, tw.WriteImage(img))
		for _, d := range []digest.Digest{base, top} {
			z := compressZstd(t, baseLayer(t))
			must(t, tw.WriteLayer(d, int64(len(z)), bytes.NewReader(z)))
		}
		must(t, tw.Close())
		return buf.Bytes()
	}
	cases := []struct {
		name   string
		stream func(t *testing.T) []byte
		want   Want
		// errHas must all be in the error.
		errHas []string
	}{
		{"substituted layer", tampered, want, []string{top.String(), "refused", "content is " + base.String()}},
		{"flipped bit in a layer's compressed bytes", func(t *testing.T) []byte {
			b := bytes.Clone(good)
			// The member's name opens its 512-byte header; its data follows.
			b[bytes.LastIndex(b, []byte(top.Encoded()))+512+16] ^= 0x10
			return b
		}, want, []string{top.String(), "refused"}},
		{"another image", func(t *testing.T) []byte { return good }, Want{Name: "other", Layers: want.Layers}, []string{`"app"`, `"other"`}},
		{"other layers", func(t *testing.T) []byte { return good }, Want{Name: "app", Layers: []digest.Digest{top, base}}, []string{"has layers"}},
		{"a layer left out", func(t *testing.T) []byte { return send(t, src, img, top) }, want, []string{base.String(), "was not sent"}},
		{"cut short", func(t *testing.T) []byte { return good[:len(good)/2] }, want, []string{"truncated"}},
		{"empty", func(t *testing.T) []byte { return nil }, want, []string{"truncated"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst, root := openStore(t)
			before := listing(t, root)
			_, err := dst.Receive(t.Context(), bytes.NewReader(tc.stream(t)), tc.want)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Receive = %v, want ErrInvalid", err)
			}
			for _, s := range tc.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if after := listing(t, root); !maps.Equal(before, after) {
				t.Errorf("a refused transfer changed the store:\nbefore %v\nafter  %v", before, after)
			}
			if _, err := dst.Get(img.Name); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get after a refused transfer = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestTransferTwiceDoesNothingMore: a retried transfer of an image the
// store received finds it there and changes nothing.
func TestTransferTwiceDoesNothingMore(t *testing.T) {
	src, img, want := transferSource(t)
	stream := send(t, src, img, want.Layers...)
	dst, root := openStore(t)
	first, err := dst.Receive(t.Context(), bytes.NewReader(stream), want)
	must(t, err)
	before := listing(t, root)
	r := bytes.NewReader(stream)
	again, err := dst.Receive(t.Context(), r, want)
	if err != nil {
		t.Fatalf("second Receive: %v", err)
	}
	if again.ID != first.ID || !again.Imported.Equal(first.Imported) {
		t.Errorf("second Receive returned %+v, want the image recorded first %+v", again, first)
	}
	if r.Len() != 0 {
		t.Errorf("second Receive left %d bytes of the transfer unread", r.Len())
	}
	if after := listing(t, root); !maps.Equal(before, after) {
		t.Errorf("a repeated transfer changed the store:\nbefore %v\nafter  %v", before, after)
	}
}

func TestSendRefusesForeignLayers(t *testing.T) {
	src, img, _ := transferSource(t)
	foreign := digest.FromString("not a layer of app")
	if err := src.Send(t.Context(), img.Name, []digest.Digest{foreign}, io.Discard, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Send of a layer the image does not have = %v, want ErrInvalid", err)
	}
	if err := src.Send(t.Context(), "missing", nil, io.Discard, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Send of an unknown image = %v, want ErrNotFound", err)
	}
}

func compressZstd(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	must(t, err)
	_, err = zw.Write(b)
	must(t, err)
	must(t, zw.Close())
	return buf.Bytes()
}
