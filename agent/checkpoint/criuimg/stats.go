package criuimg

import (
	"fmt"
	"math"
	"os"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/stats"
)

// Stats is what CRIU measured while dumping (and, once restored,
// restoring) a checkpoint, plus the size of its images. Migrations report
// it and the balancer's cost model learns from it.
type Stats struct {
	// Dump is nil when the directory has no stats-dump (a dump that
	// failed early, or a CRIU work dir other than the images dir).
	Dump *DumpStats `json:"dump,omitempty"`
	// Restore is nil until CRIU has restored from the directory.
	Restore *RestoreStats `json:"restore,omitempty"`
	// ImageBytes is the total size of the regular files directly in the
	// directory: the CRIU images, memory pages included, and anything
	// else CRIU left there (logs, stats). A pre-dump parent that a
	// "parent" symlink points at is not counted.
	ImageBytes int64 `json:"image_bytes"`
}

// DumpStats is CRIU's stats-dump. CRIU measures times in microseconds.
type DumpStats struct {
	// FreezingTime is how long freezing the tasks took (cgroup freezer
	// or ptrace seize).
	FreezingTime time.Duration `json:"freezing_time_ns"`
	// FrozenTime is how long the tasks stayed frozen: the downtime of a
	// stop-and-copy dump.
	FrozenTime time.Duration `json:"frozen_time_ns"`
	// MemdumpTime is how long collecting memory pages took.
	MemdumpTime time.Duration `json:"memdump_time_ns"`
	// MemwriteTime is how long writing pages out (to images or a page
	// server) took.
	MemwriteTime time.Duration `json:"memwrite_time_ns"`
	// IrmapResolveTime is how long resolving inotify watch paths took.
	IrmapResolveTime time.Duration `json:"irmap_resolve_time_ns,omitempty"`

	// PagesScanned counts the private pages CRIU looked at.
	PagesScanned int64 `json:"pages_scanned"`
	// PagesSkippedParent counts pages left out because a pre-dump
	// parent already holds them unchanged.
	PagesSkippedParent int64 `json:"pages_skipped_parent"`
	// PagesWritten counts pages written to the images or a page server.
	PagesWritten int64 `json:"pages_written"`
	// PagesLazy counts pages left for lazy (post-copy) restore.
	PagesLazy int64 `json:"pages_lazy"`
	// PagePipes and PagePipeBufs describe how CRIU batched the pages.
	PagePipes    int64 `json:"page_pipes,omitempty"`
	PagePipeBufs int64 `json:"page_pipe_bufs,omitempty"`
	// Shpages* are the same counters for shared memory.
	ShpagesScanned       int64 `json:"shpages_scanned,omitempty"`
	ShpagesSkippedParent int64 `json:"shpages_skipped_parent,omitempty"`
	ShpagesWritten       int64 `json:"shpages_written,omitempty"`
}

// RestoreStats is CRIU's stats-restore.
type RestoreStats struct {
	// ForkingTime is how long recreating the process tree took.
	ForkingTime time.Duration `json:"forking_time_ns"`
	// RestoreTime is the whole restore, from start to resuming the tasks.
	RestoreTime time.Duration `json:"restore_time_ns"`
	// PagesCompared and PagesSkippedCOW count pages CRIU compared with
	// the parent's and shared copy-on-write instead of copying.
	PagesCompared   int64 `json:"pages_compared"`
	PagesSkippedCOW int64 `json:"pages_skipped_cow"`
	// PagesRestored counts pages read back into memory.
	PagesRestored int64 `json:"pages_restored,omitempty"`
}

// ReadStats reads the statistics CRIU wrote into dir (its stats-dump and,
// after a restore, stats-restore) and sums the size of dir's files. A
// missing stats file leaves its field nil; a missing dir, or a stats file
// that does not decode, is an error.
func ReadStats(dir string) (*Stats, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint stats: %w", err)
	}
	defer root.Close()
	return readStats(root, dir)
}

func readStats(root *os.Root, dir string) (*Stats, error) {
	s := &Stats{}
	dump, err := readStatsFile(root, crit.StatsDump)
	if err != nil {
		return nil, err
	}
	if d := dump.GetDump(); d != nil {
		s.Dump = &DumpStats{
			FreezingTime:         usec(d.GetFreezingTime()),
			FrozenTime:           usec(d.GetFrozenTime()),
			MemdumpTime:          usec(d.GetMemdumpTime()),
			MemwriteTime:         usec(d.GetMemwriteTime()),
			IrmapResolveTime:     usec(d.GetIrmapResolve()),
			PagesScanned:         count(d.GetPagesScanned()),
			PagesSkippedParent:   count(d.GetPagesSkippedParent()),
			PagesWritten:         count(d.GetPagesWritten()),
			PagesLazy:            count(d.GetPagesLazy()),
			PagePipes:            count(d.GetPagePipes()),
			PagePipeBufs:         count(d.GetPagePipeBufs()),
			ShpagesScanned:       count(d.GetShpagesScanned()),
			ShpagesSkippedParent: count(d.GetShpagesSkippedParent()),
			ShpagesWritten:       count(d.GetShpagesWritten()),
		}
	}
	restore, err := readStatsFile(root, crit.StatsRestore)
	if err != nil {
		return nil, err
	}
	if r := restore.GetRestore(); r != nil {
		s.Restore = &RestoreStats{
			ForkingTime:     usec(r.GetForkingTime()),
			RestoreTime:     usec(r.GetRestoreTime()),
			PagesCompared:   count(r.GetPagesCompared()),
			PagesSkippedCOW: count(r.GetPagesSkippedCow()),
			PagesRestored:   count(r.GetPagesRestored()),
		}
	}
	if s.ImageBytes, err = dirBytes(dir); err != nil {
		return nil, err
	}
	return s, nil
}

// readStatsFile decodes one stats file; a missing one is (nil, nil).
func readStatsFile(root *os.Root, name string) (*stats.StatsEntry, error) {
	e, err := decodeOne(root, name, magicStats, &stats.StatsEntry{})
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint stats: %w", err)
	}
	return e, nil
}

// dirBytes sums the sizes of the regular files directly in dir. Symlinks
// (a pre-dump's "parent") are not followed.
func dirBytes(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("size of checkpoint images: %w", err)
	}
	var total int64
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if isNotExist(err) {
			continue // removed while we listed: not part of the images
		}
		if err != nil {
			return 0, fmt.Errorf("size of checkpoint images: %w", err)
		}
		total += fi.Size()
	}
	return total, nil
}

// usec converts CRIU's microsecond counters.
func usec(v uint32) time.Duration { return time.Duration(v) * time.Microsecond }

// count converts CRIU's unsigned counters, saturating rather than wrapping
// on a crafted value that does not fit.
func count(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}
