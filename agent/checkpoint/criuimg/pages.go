package criuimg

import (
	"errors"
	"fmt"
	"math"
	"os"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"google.golang.org/protobuf/encoding/protowire"
)

// maxCmdlineBytes bounds how much of a process's argument area is read
// back: Linux allows a quarter of the stack limit, far more than anyone
// reads on a screen, and a crafted mm image could claim any range.
const maxCmdlineBytes = 1 << 20

// Pagemap entry flags (CRIU's criu/include/page-read.h). Images older
// than the flags field mark parent pages with in_parent instead.
const (
	pageInParent = 1 << 0 // the pages are in the parent (pre-dump) images
	pageLazy     = 1 << 1 // the pages are left for lazy restore
	pagePresent  = 1 << 2 // the pages are in this directory's pages-ID.img
)

// Why asked-for memory is not in this directory.
var (
	errPagesInParent = errors.New("its pages are in the pre-dump parent's images")
	errPagesLazy     = errors.New("its pages were left for lazy restore")
	errPagesAbsent   = errors.New("its pages are not in this directory (sent to a page server?)")
	errNotDumped     = errors.New("CRIU did not dump its pages")
)

// pageSize is the page size CRIU dumped with. CRIU restores only on a
// host of the same architecture, and so the same page size.
var pageSize = uint64(os.Getpagesize())

// pageRun is one pagemap entry: nrPages pages from start, stored at off in
// pages-ID.img when present.
type pageRun struct {
	start, end uint64
	// missing is why the pages are not in pages-ID.img; nil if they are.
	missing error
	off     int64
}

// pageMap is a process's pagemap-PID.img.
type pageMap struct {
	pagesID uint32
	runs    []pageRun
	pages   uint64
}

// readPagemap decodes pagemap-PID.img. crit decodes its first entry as
// the head (which pages-ID.img holds the pages) and the rest as entries.
func readPagemap(root *os.Root, pid uint32) (*pageMap, error) {
	name := fmt.Sprintf("pagemap-%d.img", pid)
	msgs, err := decodeImage(root, name, magicPagemap, &pagemap.PagemapEntry{})
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("%w %s: no pagemap head", ErrMalformedImage, name)
	}
	head, ok := msgs[0].(*pagemap.PagemapHead)
	if !ok {
		return nil, fmt.Errorf("%w %s: unexpected head type %T", ErrMalformedImage, name, msgs[0])
	}
	pm := &pageMap{pagesID: head.GetPagesId(), runs: make([]pageRun, 0, len(msgs)-1)}
	var off uint64
	for _, m := range msgs[1:] {
		e, ok := m.(*pagemap.PagemapEntry)
		if !ok {
			return nil, fmt.Errorf("%w %s: unexpected entry type %T", ErrMalformedImage, name, m)
		}
		nr, err := nrPages(e)
		if err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrMalformedImage, name, err)
		}
		if nr > math.MaxUint64/pageSize {
			return nil, fmt.Errorf("%w %s: entry at %#x claims %d pages", ErrMalformedImage, name, e.GetVaddr(), nr)
		}
		size := nr * pageSize
		if e.GetVaddr() > math.MaxUint64-size || off > math.MaxInt64-size || pm.pages > math.MaxUint64-nr {
			return nil, fmt.Errorf("%w %s: entry at %#x overflows", ErrMalformedImage, name, e.GetVaddr())
		}
		run := pageRun{start: e.GetVaddr(), end: e.GetVaddr() + size, missing: missing(e), off: int64(off)}
		if run.missing == nil {
			off += size
		}
		pm.runs = append(pm.runs, run)
		pm.pages += nr
	}
	return pm, nil
}

// pagemapNrPages is pagemap_entry's 64-bit page count, field 5, which
// CRIU 4.0 added; it then writes 0 in the old 32-bit nr_pages (field 2,
// renamed compat_nr_pages). go-criu v7.2.0 predates the field and leaves
// it among the unknown fields, so it is read from there with the
// protobuf library's wire decoder.
const pagemapNrPages protowire.Number = 5

// nrPages is an entry's page count from whichever field CRIU wrote.
func nrPages(e *pagemap.PagemapEntry) (uint64, error) {
	b := e.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		b = b[n:]
		if num == pagemapNrPages && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			return v, nil
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return uint64(e.GetNrPages()), nil
}

// missing says why an entry's pages are not in this directory, or nil if
// they are.
func missing(e *pagemap.PagemapEntry) error {
	flags := e.GetFlags()
	if e.Flags == nil && e.GetInParent() {
		flags = pageInParent
	} else if e.Flags == nil {
		flags = pagePresent
	}
	switch {
	case flags&pagePresent != 0:
		return nil
	case flags&pageInParent != 0:
		return errPagesInParent
	case flags&pageLazy != 0:
		return errPagesLazy
	default:
		return errPagesAbsent
	}
}

// bytes is the memory the pagemap covers, wherever its pages are.
func (pm *pageMap) bytes() int64 {
	if pm.pages > math.MaxInt64/pageSize {
		return math.MaxInt64
	}
	return int64(pm.pages * pageSize)
}

// read returns the dumped memory in [start, end), at most
// maxCmdlineBytes of it (truncated says it was cut).
func (pm *pageMap) read(root *os.Root, start, end uint64) (data []byte, truncated bool, err error) {
	if end <= start {
		return nil, false, nil
	}
	if end-start > maxCmdlineBytes {
		end, truncated = start+maxCmdlineBytes, true
	}
	// Find every run first, so that memory this directory does not hold
	// is reported as such, whether or not a pages file exists.
	type piece struct {
		off int64
		n   uint64
	}
	var pieces []piece
	for addr := start; addr < end; {
		run, ok := pm.find(addr)
		if !ok {
			return nil, false, errNotDumped
		}
		if run.missing != nil {
			return nil, false, run.missing
		}
		n := min(end, run.end) - addr
		pieces = append(pieces, piece{run.off + int64(addr-run.start), n})
		addr += n
	}

	name := fmt.Sprintf("pages-%d.img", pm.pagesID)
	f, err := root.Open(name)
	if isNotExist(err) {
		return nil, false, errPagesAbsent
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	data = make([]byte, end-start)
	var at uint64
	for _, p := range pieces {
		if _, err := f.ReadAt(data[at:at+p.n], p.off); err != nil {
			return nil, false, fmt.Errorf("%w %s: %w", ErrMalformedImage, name, err)
		}
		at += p.n
	}
	return data, truncated, nil
}

// find returns the run holding addr. Pagemaps are short (one entry per
// run of dumped pages), so a linear scan is enough.
func (pm *pageMap) find(addr uint64) (pageRun, bool) {
	for _, r := range pm.runs {
		if addr >= r.start && addr < r.end {
			return r, true
		}
	}
	return pageRun{}, false
}
