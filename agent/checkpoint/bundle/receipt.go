package bundle

import (
	"errors"
	"maps"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Receipt is what an import (Receive, ImportWithReceipt) wrote after it
// checked every file (against its digest, or its CRC-32C for a transfer
// checksummed so): the manifest's bytes and, for each file, the
// identity of the inode it wrote, taken once the file was complete. A
// restore moments later verifies the directory against it (Verify) with a
// stat per file instead of a pass over every byte: on a migration's
// destination, digesting the memory pages a second time inside the
// container's downtime bought nothing the import had not checked.
//
// A Receipt lives in the memory of the process that imported; it is not
// written anywhere, so an agent that restarts verifies in full again.
type Receipt struct {
	manifest digest.Digest
	files    map[string]fileStamp
	// admitted are files the manifest does not list, vouched for by
	// their stamp alone (Admit).
	admitted map[string]fileStamp
}

// fileStamp identifies a file's inode and its last change: any write,
// truncation, chmod or replacement of the file changes its device and
// inode (replaced) or its size, mtime or ctime, and ctime cannot be set
// from user space. On kernels with multigrain timestamps (Linux 6.13 on
// ext4, xfs, btrfs and tmpfs) a change right after the stamp was taken
// gets a distinct ctime too; on older ones a change within the same clock
// tick and of the same size could go unseen, which the receipt accepts:
// it guards against accidents, and the directory is root's.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
}

func stampOf(st *unix.Stat_t) fileStamp {
	return fileStamp{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}

// statFile stamps an open file.
func statFile(f *os.File) (fileStamp, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileStamp{}, err
	}
	return stampOf(&st), nil
}

func newReceipt(manifest []byte, files int) *Receipt {
	return &Receipt{manifest: digest.FromBytes(manifest), files: make(map[string]fileStamp, files)}
}

// Verify checks the checkpoint directory dir as the package's Verify
// does, with the same errors, but digests only the files that changed
// since the import that made r: the manifest must be the one imported,
// byte for byte, and every listed file is still there, with no other, as
// Verify requires; a file whose stamp (inode, size, mtime, ctime) is
// unchanged is taken as the import checked it, and any other is digested
// and checked against the manifest. A checkpoint received unsealed (a
// transfer checksummed with CRC-32C) has no digest to check a changed
// file against: one is refused. A nil Receipt verifies every file, and
// refuses an unsealed checkpoint (ErrUnsealed).
func (r *Receipt) Verify(dir string) (*Manifest, error) {
	if r == nil {
		return Verify(dir)
	}
	m, data, err := readManifestFile(dir)
	if err != nil {
		return nil, err
	}
	if digest.FromBytes(data) != r.manifest {
		return nil, dirError(ManifestName, ErrCorrupt, "changed since the checkpoint was imported; %s", adviceDir)
	}
	onDisk, err := scan(dir)
	if err != nil {
		return nil, err
	}
	if onDisk, err = r.checkAdmitted(dir, onDisk); err != nil {
		return nil, err
	}
	if err := sameFiles(m, onDisk); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		var st unix.Stat_t
		err := unix.Lstat(filepath.Join(dir, filepath.FromSlash(f.Path)), &st)
		if err != nil {
			return nil, dirError(f.Path, err, "stat: %v", err)
		}
		if want, ok := r.files[f.Path]; ok && stampOf(&st) == want {
			continue
		}
		if m.DigestsPending { // a transfer checksummed with CRC-32C
			return nil, dirError(f.Path, ErrCorrupt, "changed since it arrived, and no digest covers it; %s", adviceDir)
		}
		if err := checkFile(dir, f); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Admit makes r vouch for files of dir that its manifest does not list
// and no digest covers: files that reached dir by another way than the
// import, over a channel that authenticated them (a stream migration's
// memory pages, which CRIU's page server wrote as they came over the
// agents' TLS connection). Digesting them here would only check the
// bytes against themselves, inside the container's downtime. Verify
// accepts each, unlisted, while its stamp is the one taken here, and
// refuses the directory once one changed or went; a Verify without r
// refuses it too (a file the manifest does not list), so that only the
// process that admitted them restores from them. paths are relative to
// dir and "/"-separated, as in a manifest; each must be a regular file
// the manifest does not list.
func (r *Receipt) Admit(dir string, paths ...string) error {
	if r == nil {
		return errors.New("admit files to a checkpoint: no receipt to vouch for them")
	}
	m, data, err := readManifestFile(dir)
	if err != nil {
		return err
	}
	if digest.FromBytes(data) != r.manifest {
		return dirError(ManifestName, ErrCorrupt, "changed since the checkpoint was imported; %s", adviceDir)
	}
	listed := m.index()
	stamps := make(map[string]fileStamp, len(paths))
	for _, p := range paths {
		if listed[p] != nil {
			return dirError(p, ErrInvalidManifest, "is listed in the manifest: only an unlisted file is admitted")
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, filepath.FromSlash(p)), &st); err != nil {
			return dirError(p, err, "stat: %v", err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return dirError(p, ErrUnsafe, "is not a regular file")
		}
		stamps[p] = stampOf(&st)
	}
	if r.admitted == nil {
		r.admitted = make(map[string]fileStamp, len(stamps))
	}
	maps.Copy(r.admitted, stamps)
	return nil
}

// checkAdmitted takes the files r admitted out of onDisk, the files of
// dir, after checking that each is there with the stamp Admit took.
func (r *Receipt) checkAdmitted(dir string, onDisk []File) ([]File, error) {
	if len(r.admitted) == 0 {
		return onDisk, nil
	}
	rest := make([]File, 0, len(onDisk))
	for _, f := range onDisk {
		if _, ok := r.admitted[f.Path]; !ok {
			rest = append(rest, f)
		}
	}
	for p, want := range r.admitted {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, filepath.FromSlash(p)), &st); err != nil {
			return nil, dirError(p, ErrCorrupt, "was admitted to the checkpoint but is gone (%v); %s", err, adviceDir)
		}
		if stampOf(&st) != want {
			return nil, dirError(p, ErrCorrupt, "changed since it was admitted to the checkpoint, and no digest covers it; %s", adviceDir)
		}
	}
	return rest, nil
}
