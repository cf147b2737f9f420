package criuimg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	"github.com/checkpoint-restore/go-criu/v7/magic"
	"google.golang.org/protobuf/proto"
)

// maxImageBytes bounds a metadata image (everything but pages-*.img).
// Real ones are kilobytes; files.img of a large container is a few
// megabytes. Anything bigger is refused before it is decoded.
const maxImageBytes = 64 << 20

// The framing of a CRIU image file: an optional common magic (IMG_COMMON,
// or IMG_SERVICE for service files such as stats), the image's own magic,
// then entries, each a little-endian uint32 length and that many bytes of
// protobuf. crit's decoder allocates whatever a length field claims, so
// the framing is checked first; the protobuf itself is left to crit.
const (
	magicBytes     = 4
	entryLenBytes  = 4
	magicImgCommon = "IMG_COMMON"
	magicService   = "IMG_SERVICE"
)

// Magic names of the images this package reads, as go-criu's magic
// package spells them.
const (
	magicPstree  = "PSTREE"
	magicCore    = "CORE"
	magicIDs     = "IDS"
	magicFdinfo  = "FDINFO"
	magicFiles   = "FILES"
	magicFS      = "FS"
	magicMM      = "MM"
	magicPagemap = "PAGEMAP"
	magicMnts    = "MNTS"
	magicStats   = "STATS"
)

var magics = magic.LoadMagic()

// decodeImage decodes the image file name under root. Its magic must be
// want and its entries are decoded as entry's type (crit decodes pagemap
// images as one PagemapHead followed by PagemapEntry values, whatever
// entry is). A missing file is an error that matches fs.ErrNotExist.
func decodeImage(root *os.Root, name, want string, entry proto.Message) ([]proto.Message, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := checkFraming(f); err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrMalformedImage, name, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("read image %s: %w", name, err)
	}
	img, err := crit.New(f, nil, "", false, false).Decode(entry)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrMalformedImage, name, err)
	}
	if img.Magic != want {
		return nil, fmt.Errorf("%w %s: magic %s, want %s", ErrMalformedImage, name, img.Magic, want)
	}
	msgs := make([]proto.Message, 0, len(img.Entries))
	for _, e := range img.Entries {
		msgs = append(msgs, e.Message)
	}
	return msgs, nil
}

// checkFraming reads f, which must be a regular file of at most
// maxImageBytes, and checks that every entry's length fits in the file.
func checkFraming(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	if fi.Size() > maxImageBytes {
		return fmt.Errorf("%d bytes, more than the %d a metadata image may have", fi.Size(), maxImageBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxImageBytes+1))
	if err != nil {
		return err
	}
	if len(data) < magicBytes {
		return errors.New("truncated magic")
	}
	off := magicBytes
	switch uint64(binary.LittleEndian.Uint32(data)) {
	case magics.ByName[magicImgCommon], magics.ByName[magicService]:
		off += magicBytes
	}
	if len(data) < off {
		return errors.New("truncated magic")
	}
	for off < len(data) {
		if len(data)-off < entryLenBytes {
			return fmt.Errorf("truncated entry length at offset %d", off)
		}
		n := uint64(binary.LittleEndian.Uint32(data[off:]))
		off += entryLenBytes
		if n > uint64(len(data)-off) {
			return fmt.Errorf("entry at offset %d claims %d bytes, %d remain", off-entryLenBytes, n, len(data)-off)
		}
		off += int(n)
	}
	return nil
}

// decodeOne decodes an image that holds exactly one entry of type T.
func decodeOne[T proto.Message](root *os.Root, name, want string, entry T) (T, error) {
	var zero T
	msgs, err := decodeImage(root, name, want, entry)
	if err != nil {
		return zero, err
	}
	if len(msgs) != 1 {
		return zero, fmt.Errorf("%w %s: %d entries, want 1", ErrMalformedImage, name, len(msgs))
	}
	m, ok := msgs[0].(T)
	if !ok {
		return zero, fmt.Errorf("%w %s: unexpected entry type %T", ErrMalformedImage, name, msgs[0])
	}
	return m, nil
}

// decodeAll decodes an image whose entries are all of type T.
func decodeAll[T proto.Message](root *os.Root, name, want string, entry T) ([]T, error) {
	msgs, err := decodeImage(root, name, want, entry)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(msgs))
	for _, m := range msgs {
		t, ok := m.(T)
		if !ok {
			return nil, fmt.Errorf("%w %s: unexpected entry type %T", ErrMalformedImage, name, m)
		}
		out = append(out, t)
	}
	return out, nil
}

// isNotExist reports whether err says an image file is absent.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
