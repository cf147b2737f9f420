package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/migrate"
)

// A migration's destination keeps the checkpoint it receives in memory, on
// a tmpfs of its own, when memory allows, rather than in the data dir,
// where the pages would sit in the page cache as dirty data of the data
// dir's filesystem. Restoring on overlayfs unmounts a mount of the
// container's snapshot (snapshot.ReceiveChanges), and unmounting an
// overlay syncs its upper directory's whole filesystem: with the
// checkpoint beside it, the restore waited for its hundreds of MiB to be
// written to disk, inside the container's downtime (about 0.7 s for
// 512 MiB on an idle host here, 1.5 s on a busy one; docs/benchmarks.md).
// CRIU's own documentation and P.Haul keep images in a tmpfs for the same
// reason. The checkpoint lives in scratchDir/ID, and the checkpoint's
// usual place (checkpointDir) is a symbolic link to it, so that every
// step finds it where it always does.

const (
	// scratchDir is the tmpfs's mount point under the run dir: what lives
	// only while the node is up. The agent mounts it on first use and
	// leaves it mounted; it holds nothing between migrations.
	scratchDir = "migration-images"
	// scratchReserveMin and scratchReserveShare are the memory left to
	// everything else once the checkpoint is in the tmpfs and the
	// container restored from it: the larger of the two.
	scratchReserveMin   = 256 << 20
	scratchReserveShare = 10 // percent of the node's memory
	// tmpfsMagic is statfs's f_type of a tmpfs.
	tmpfsMagic = 0x01021994
)

// memoryKept is what a node of total bytes of memory keeps for everything
// but a migration's extra memory (its tmpfs, its reserve).
func memoryKept(total int64) int64 {
	return max(int64(scratchReserveMin), total*scratchReserveShare/100)
}

func (a *Agent) scratchRoot() string { return filepath.Join(a.cfg.RunDir, scratchDir) }

// scratchFor returns where the checkpoint of size bytes of the migration
// rec records should be received: a new directory's path on the agent's
// tmpfs, or "" for the data dir (the usual checkpointDir), with why in
// the log. The tmpfs is used for stop-copy, without pre-copy rounds (the
// other strategies add files to the checkpoint from the data dir, and
// pre-copy's links to it are relative to it), when the data dir is not in
// memory already but has room for the checkpoint, and when the node's
// available memory holds the checkpoint twice (the images, and the
// container restored from them) with a reserve to spare.
func (a *Agent) scratchFor(rec *migrate.Record, size int64) string {
	id := rec.ID
	if rec.Strategy != migrate.StopCopy || a.sealedRounds(id) > 0 {
		return ""
	}
	log := a.log.With("migration", id, "checkpoint_bytes", size)
	var st unix.Statfs_t
	if err := unix.Statfs(a.cfg.checkpointsDir(), &st); err != nil {
		log.Warn("receiving the migration's checkpoint to the data dir: cannot tell its filesystem", "err", err)
		return ""
	}
	if st.Type == tmpfsMagic {
		return "" // in memory already
	}
	// The tmpfs makes a move faster, not possible: whether a node can
	// take a container must not depend on how much memory happens to be
	// free, or a move that worked once would fail the next time.
	if room := int64(st.Bavail) * st.Bsize; room < size {
		return "" // receiving to the data dir fails with a full disk
	}
	avail, total, err := memInfo()
	if err != nil {
		log.Warn("receiving the migration's checkpoint to the data dir: cannot tell the free memory for a tmpfs", "err", err)
		return ""
	}
	// What the migration reserved for its restore is the restored
	// container's share, counted below.
	avail += a.reservedMemory(id, reserveRestore)
	reserve := memoryKept(total)
	if need := 2*size + reserve; avail < need {
		log.Warn("receiving the migration's checkpoint to the data dir, not to memory: too little memory available for a tmpfs",
			"mem_available", avail, "needed", need)
		return ""
	}
	if err := a.mountScratch(); err != nil {
		log.Warn("receiving the migration's checkpoint to the data dir, not to memory", "err", err)
		return ""
	}
	log.Info("receiving the migration's checkpoint to memory (tmpfs)", "dir", a.scratchRoot(), "mem_available", avail)
	return filepath.Join(a.scratchRoot(), id)
}

// mountScratch mounts the agent's tmpfs, unless it is mounted already.
func (a *Agent) mountScratch() error {
	a.mig.mu.Lock()
	defer a.mig.mu.Unlock()
	root := a.scratchRoot()
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", root, err)
	}
	if mounted, err := isMountPoint(root); err != nil || mounted {
		return err
	}
	// Private to root, like the data dir: the images hold the
	// container's memory. Its size is the kernel's default (half the
	// memory); scratchFor checks the memory each checkpoint needs.
	// Huge pages for files large enough to fill them: with 4 KiB pages a
	// tmpfs writes the images slower than ext4's page cache does
	// (docs/benchmarks.md). A kernel without transparent huge pages
	// refuses the option: then 4 KiB pages it is.
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	err := unix.Mount("tmpfs", root, "tmpfs", flags, "mode=0700,huge=within_size")
	if errors.Is(err, unix.EINVAL) {
		a.log.Info("the migrations' tmpfs has no huge pages: the kernel refused them", "dir", root, "err", err)
		err = unix.Mount("tmpfs", root, "tmpfs", flags, "mode=0700")
	}
	if err != nil {
		return fmt.Errorf("mount a tmpfs on %s: %w", root, err)
	}
	return nil
}

// clearScratch removes what a previous attempt at receiving migration
// id's checkpoint left: a link in the checkpoint's usual place, and the
// directory it pointed to. The caller has found no checkpoint there.
func (a *Agent) clearScratch(id, dir string) error {
	if info, err := os.Lstat(dir); err == nil && info.Mode()&fs.ModeSymlink != 0 {
		if err := os.Remove(dir); err != nil {
			return err
		}
	}
	return a.removeScratch(id)
}

// removeScratch removes migration id's checkpoint from the tmpfs, and
// what an interrupted receive left beside it (bundle's staging
// directories are named after their destination).
func (a *Agent) removeScratch(id string) error {
	root := a.scratchRoot()
	leftovers, _ := filepath.Glob(filepath.Join(root, "."+id+".importing-*"))
	var errs []error
	for _, p := range append(leftovers, filepath.Join(root, id)) {
		if err := os.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// memInfo is readMemInfo; tests give the node another amount of memory.
var memInfo = readMemInfo

// readMemInfo returns MemAvailable and MemTotal from /proc/meminfo, in
// bytes.
func readMemInfo() (avail, total int64, err error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	return parseMemInfo(bufio.NewScanner(f))
}

func parseMemInfo(sc *bufio.Scanner) (avail, total int64, err error) {
	found := 0
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "MemAvailable" && key != "MemTotal") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/meminfo: %s: %w", key, err)
		}
		if key == "MemAvailable" {
			avail = kb << 10
		} else {
			total = kb << 10
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if found != 2 {
		return 0, 0, errors.New("/proc/meminfo has no MemAvailable or MemTotal")
	}
	return avail, total, nil
}
