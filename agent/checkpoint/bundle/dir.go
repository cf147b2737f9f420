package bundle

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

const (
	// dirMode and fileMode keep a checkpoint private to root: CRIU images
	// hold the container's memory, secrets included.
	dirMode  = 0o700
	fileMode = 0o600
)

// scan lists the files of the checkpoint directory dir, the manifest
// excluded, with their sizes, sorted by path. It refuses anything but
// regular files at the top level and in CRIUDir: a symlink, device, socket
// or nested directory is a *FileError matching ErrUnsafe.
func scan(dir string) ([]File, error) {
	top, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint directory: %w", err)
	}
	var files []File
	for _, e := range top {
		name := e.Name()
		switch {
		case name == ManifestName:
			continue
		case name == CRIUDir && e.Type().IsDir():
			inner, err := os.ReadDir(filepath.Join(dir, CRIUDir))
			if err != nil {
				return nil, fmt.Errorf("read checkpoint directory: %w", err)
			}
			for _, ie := range inner {
				f, err := regularFile(path.Join(CRIUDir, ie.Name()), ie)
				if err != nil {
					return nil, err
				}
				files = append(files, f)
			}
		default:
			f, err := regularFile(name, e)
			if err != nil {
				return nil, err
			}
			files = append(files, f)
		}
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// regularFile returns the File for a directory entry, which must be a
// regular file (ReadDir does not follow symlinks).
func regularFile(p string, e fs.DirEntry) (File, error) {
	if !e.Type().IsRegular() {
		return File{}, dirError(p, ErrUnsafe,
			"is a %s, but a checkpoint holds only regular files (and the %s/ directory): remove it, or take a new checkpoint",
			typeName(e.Type()), CRIUDir)
	}
	info, err := e.Info()
	if err != nil {
		return File{}, dirError(p, err, "stat: %v", err)
	}
	return File{Path: p, Size: info.Size()}, nil
}

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

// openFile opens a checkpoint file for reading without following a
// symlink that replaced it since the scan.
func openFile(dir, p string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, filepath.FromSlash(p)), os.O_RDONLY|unix.O_NOFOLLOW, 0)
}

// hashFile returns the size and sha256 of a checkpoint file.
func hashFile(dir, p string) (int64, digest.Digest, error) {
	f, err := openFile(dir, p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	// Reading the next chunk overlaps hashing this one.
	n, err := newReadAhead(f).WriteTo(h)
	if err != nil {
		return 0, "", err
	}
	return n, digest.NewDigest(digest.SHA256, h), nil
}

// WriteManifest lists and digests every file under dir except the manifest,
// stores the list in m.Files, sets m.FormatVersion (and m.Created, when
// zero), validates m and writes it to dir/manifest.json atomically. dir must
// hold only regular files at its top level and in CRIUDir.
func WriteManifest(dir string, m *Manifest) error {
	files, err := scan(dir)
	if err != nil {
		return err
	}
	if err := digestFiles(dir, files); err != nil {
		return err
	}
	m.Files, m.DigestsPending = files, false
	return writeManifest(dir, m)
}

// WritePendingManifest is WriteManifest without the digests: it lists
// every file with its size and marks the manifest DigestsPending, so that
// it costs no pass over the files. A migration's source writes its
// checkpoint so while the container is frozen, and Send computes the
// digests as it sends the files; Seal computes them when the checkpoint
// is to be restored or exported instead.
func WritePendingManifest(dir string, m *Manifest) error {
	files, err := scan(dir)
	if err != nil {
		return err
	}
	m.Files, m.DigestsPending = files, true
	return writeManifest(dir, m)
}

// writeManifest completes, validates and writes m.
func writeManifest(dir string, m *Manifest) error {
	m.FormatVersion = FormatVersion
	if m.Created.IsZero() {
		m.Created = time.Now().UTC().Round(0)
	}
	if err := m.Validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	return writeAtomic(dir, ManifestName, append(data, '\n'))
}

// digestFiles fills in the size and sha256 of each of files from dir.
func digestFiles(dir string, files []File) error {
	for i := range files {
		size, d, err := hashFile(dir, files[i].Path)
		if err != nil {
			return dirError(files[i].Path, err, "digest: %v", err)
		}
		files[i].Size, files[i].Digest = size, d
	}
	return nil
}

// Seal computes the digests of a checkpoint that WritePendingManifest
// wrote and writes its manifest with them, so that it verifies, restores
// and exports like any other; it returns the sealed manifest. The files
// must be those listed, with their listed sizes (a *FileError otherwise).
// A checkpoint sealed already is returned as it is, not digested again.
func Seal(dir string) (*Manifest, error) {
	m, err := ReadManifest(dir)
	if err != nil || !m.DigestsPending {
		return m, err
	}
	onDisk, err := scan(dir)
	if err != nil {
		return nil, err
	}
	if err := sameFiles(m, onDisk); err != nil {
		return nil, err
	}
	files := slices.Clone(m.Files)
	if err := digestFiles(dir, files); err != nil {
		return nil, err
	}
	for i, f := range files {
		if f.Size != m.Files[i].Size {
			return nil, dirError(f.Path, ErrCorrupt, "size changed while it was sealed (manifest says %d bytes, read %d); %s", m.Files[i].Size, f.Size, adviceDir)
		}
	}
	m.Files, m.DigestsPending = files, false
	if err := writeManifest(dir, m); err != nil {
		return nil, err
	}
	return m, nil
}

// errUnsealed is the refusal of a checkpoint whose digests are pending,
// by an operation that needs them.
func errUnsealed(what string) *FileError {
	return dirError(ManifestName, ErrUnsealed,
		"lists no digests yet, so the checkpoint cannot be %s: it is a migration's checkpoint, sealed only when the migration needs it to be; finish or abort that migration first", what)
}

// writeAtomic replaces dir/name with data, so that a crash leaves either
// the old file or the new one.
func writeAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := tmp.Chmod(fileMode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadManifest reads and validates dir/manifest.json without checking the
// files it lists (Verify does).
func ReadManifest(dir string) (*Manifest, error) {
	m, _, err := readManifestFile(dir)
	return m, err
}

// readManifestFile returns the manifest and its bytes as they are on disk.
func readManifestFile(dir string) (*Manifest, []byte, error) {
	f, err := openFile(dir, ManifestName)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, nil, dirError(ManifestName, ErrUnsafe, "is a symlink: %s", adviceDir)
		}
		return nil, nil, fmt.Errorf("read checkpoint manifest: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("read checkpoint manifest: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, nil, dirError(ManifestName, ErrUnsafe, "is not a regular file: %s", adviceDir)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read checkpoint manifest: %w", err)
	}
	if len(data) > maxManifestSize {
		return nil, nil, dirError(ManifestName, ErrInvalidManifest, "%v: %s", errManifestTooLarge, adviceDir)
	}
	m, err := parseManifest(data)
	if err != nil {
		return nil, nil, &FileError{Path: ManifestName, Reason: err.Error(), Err: err}
	}
	return m, data, nil
}

// Verify checks the checkpoint directory dir against its manifest: every
// listed file exists as a regular file with the listed size and sha256, and
// nothing else is there. It returns the manifest, or a *FileError naming
// the first file that fails (ErrCorrupt, ErrUnsafe, ErrInvalidManifest or
// ErrUnsupportedVersion; ErrUnsealed for a manifest whose digests are
// pending). Restore calls it before CRIU reads any image.
func Verify(dir string) (*Manifest, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	if m.DigestsPending {
		return nil, errUnsealed("verified")
	}
	onDisk, err := scan(dir)
	if err != nil {
		return nil, err
	}
	if err := sameFiles(m, onDisk); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		if err := checkFile(dir, f); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// testHookCheckFile, when a test sets it, is called with the path of
// every file checkFile digests.
var testHookCheckFile func(path string)

// checkFile digests one listed file and compares it with the manifest.
func checkFile(dir string, f File) error {
	if testHookCheckFile != nil {
		testHookCheckFile(f.Path)
	}
	size, d, err := hashFile(dir, f.Path)
	if err != nil {
		return dirError(f.Path, err, "read: %v", err)
	}
	if size != f.Size {
		return dirError(f.Path, ErrCorrupt, "size mismatch: manifest says %d bytes, file has %d (it changed while being read); %s", f.Size, size, adviceDir)
	}
	if d != f.Digest {
		return dirError(f.Path, ErrCorrupt, "sha256 mismatch: manifest says %s, content is %s; %s", f.Digest.Encoded(), d.Encoded(), adviceDir)
	}
	return nil
}

// sameFiles compares the manifest's list with what scan found: names and
// sizes, without reading content.
func sameFiles(m *Manifest, onDisk []File) error {
	listed := m.index()
	found := make(map[string]int64, len(onDisk))
	for _, f := range onDisk {
		if listed[f.Path] == nil {
			return dirError(f.Path, ErrCorrupt, "is not listed in the manifest; %s", adviceDir)
		}
		found[f.Path] = f.Size
	}
	for _, f := range m.Files {
		size, ok := found[f.Path]
		if !ok {
			return dirError(f.Path, ErrCorrupt, "is listed in the manifest but missing; %s", adviceDir)
		}
		if size != f.Size {
			return dirError(f.Path, ErrCorrupt, "size mismatch: manifest says %d bytes, file has %d; %s", f.Size, size, adviceDir)
		}
	}
	return nil
}

// RecordRestore stores the statistics of a restore from the checkpoint in
// dir in its manifest and returns the updated manifest. Nothing else
// changes: the manifest does not list itself, so every digest still holds.
func RecordRestore(dir string, restoreTimeUs, pagesRestored int64) (*Manifest, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	m.Stats.RestoreTimeUs, m.Stats.PagesRestored = restoreTimeUs, pagesRestored
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	if err := writeAtomic(dir, ManifestName, append(data, '\n')); err != nil {
		return nil, err
	}
	return m, nil
}
