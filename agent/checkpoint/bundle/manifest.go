package bundle

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/godwit/godwit/agent/internal/names"
	"github.com/godwit/godwit/agent/internal/version"
)

const (
	// FormatVersion is the checkpoint format this package writes and the
	// only one it reads. A change that an older reader would misread bumps
	// it; optional fields may be added without a bump, since unknown fields
	// are ignored.
	FormatVersion = 1

	// ManifestName is the manifest's file name in a checkpoint directory and
	// the first member of an archive.
	ManifestName = "manifest.json"
	// CRIUDir holds CRIU's image files, flat.
	CRIUDir = "criu"
	// SpecName is the conventional name of the OCI runtime spec.
	SpecName = "config.json"
	// RootfsDiffName is the conventional name of the writable layer's diff,
	// an OCI layer tar.
	RootfsDiffName = "rootfs-diff.tar"

	// maxManifestSize bounds what is read as a manifest: a checkpoint has a
	// few hundred files at most, each listed in about 150 bytes.
	maxManifestSize = 4 << 20
)

var (
	// idPattern keeps checkpoint IDs usable as directory names.
	idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
)

// Manifest describes one checkpoint: what was dumped, where and with what,
// and the size and digest of every other file in it.
type Manifest struct {
	FormatVersion int       `json:"format_version"`
	ID            string    `json:"id"`
	Created       time.Time `json:"created"`
	Container     Container `json:"container"`
	Image         Image     `json:"image"`
	// Host is the node that dumped, with the versions and CPU that restore
	// is checked against (see CheckCompatibility).
	Host HostInfo `json:"host"`
	// Spec is the path of the OCI runtime spec inside the checkpoint.
	Spec string `json:"spec"`
	// RootfsDiff is the path of the writable layer's diff; empty when the
	// checkpoint carries none.
	RootfsDiff string `json:"rootfs_diff,omitempty"`
	// RootfsChanges is the path of the writable layer's changes since a
	// live migration synced it to its destination, in place of the whole
	// diff: only that migration's destination, which holds the synced
	// layer, can restore such a checkpoint.
	RootfsChanges string  `json:"rootfs_changes,omitempty"`
	Options       Options `json:"options"`
	Stats         Stats   `json:"stats"`
	// Files lists every file of the checkpoint except the manifest, sorted
	// by path; an archive holds them in this order.
	Files []File `json:"files"`
	// DigestsPending marks a checkpoint written without its digests
	// (WritePendingManifest): every File's Digest is empty until Seal
	// computes them, or until a migration's transfer (Send) computes them
	// as it sends the files. Verify, Export and Import refuse such a
	// manifest: nothing can be checked against it.
	DigestsPending bool `json:"digests_pending,omitempty"`
}

// Container identifies the checkpointed container.
type Container struct {
	Name   string            `json:"name"`
	ID     string            `json:"id,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// IP is the container's address: established TCP connections are
	// bound to it, so restore gives the container the same one.
	IP string `json:"ip,omitempty"`
}

// Image is the image the container's root filesystem is built from; restore
// needs every layer on the node before it applies the rootfs diff.
type Image struct {
	Name   string          `json:"name"`
	Layers []digest.Digest `json:"layers"`
}

// Options records how CRIU was asked to dump, so that restore can match.
type Options struct {
	TCPEstablished bool `json:"tcp_established"`
	LeaveRunning   bool `json:"leave_running"`
	FileLocks      bool `json:"file_locks"`
	// External lists the resources CRIU was told are external (the network
	// namespace, the shim's pipes), in CRIU's --external syntax.
	External []string `json:"external,omitempty"`
}

// Stats are what CRIU reported for the dump (and, when known, a restore).
// Times are in microseconds, as CRIU's stats files hold them.
type Stats struct {
	FreezingTimeUs     int64 `json:"freezing_time_us"`
	FrozenTimeUs       int64 `json:"frozen_time_us"`
	MemdumpTimeUs      int64 `json:"memdump_time_us"`
	MemwriteTimeUs     int64 `json:"memwrite_time_us"`
	PagesScanned       int64 `json:"pages_scanned"`
	PagesSkippedParent int64 `json:"pages_skipped_parent"`
	PagesWritten       int64 `json:"pages_written"`
	RestoreTimeUs      int64 `json:"restore_time_us,omitempty"`
	PagesRestored      int64 `json:"pages_restored,omitempty"`
}

// File is one file of the checkpoint.
type File struct {
	// Path is relative to the checkpoint root, "/"-separated: a top-level
	// name or CRIUDir + "/" + name.
	Path string `json:"path"`
	Size int64  `json:"size"`
	// Digest is the file's sha256; empty while the manifest's
	// DigestsPending is set.
	Digest digest.Digest `json:"digest,omitempty"`
}

// Size is the total size of the checkpoint's files, the manifest excluded.
func (m *Manifest) Size() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// index maps each listed path to its entry.
func (m *Manifest) index() map[string]*File {
	idx := make(map[string]*File, len(m.Files))
	for i := range m.Files {
		idx[m.Files[i].Path] = &m.Files[i]
	}
	return idx
}

// Validate reports the first thing that makes m unusable: an unsupported
// format version (ErrUnsupportedVersion), a missing or malformed field, or
// a file list that is unsafe or inconsistent (ErrInvalidManifest).
func (m *Manifest) Validate() error {
	if err := checkVersion(m.FormatVersion); err != nil {
		return err
	}
	switch {
	case !idPattern.MatchString(m.ID):
		return invalid("id %q: want 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit", m.ID)
	case m.Created.IsZero():
		return invalid("created time is missing")
	case !names.ValidContainer(m.Container.Name):
		return invalid("container name %q is not a valid container name", m.Container.Name)
	case m.Image.Name == "":
		return invalid("image name is missing")
	case m.Host.Node == "":
		return invalid("host node name is missing")
	case m.Host.Kernel == "":
		return invalid("host kernel version is missing")
	}
	for _, d := range m.Image.Layers {
		if err := validSHA256(d); err != nil {
			return invalid("image layer %q: %v", d, err)
		}
	}
	if _, err := version.Parse(m.Host.CRIUVersion); err != nil {
		return invalid("host CRIU version: %v", err)
	}
	if _, err := version.Parse(m.Host.RuncVersion); err != nil {
		return invalid("host runc version: %v", err)
	}
	seen := make(map[string]bool, len(m.Files))
	for i, f := range m.Files {
		if why := checkPath(f.Path); why != "" {
			return invalid("file %q: %s", f.Path, why)
		}
		if seen[f.Path] {
			return invalid("file %q is listed twice", f.Path)
		}
		if i > 0 && m.Files[i-1].Path > f.Path {
			return invalid("files are not sorted by path (%q before %q)", m.Files[i-1].Path, f.Path)
		}
		seen[f.Path] = true
		if f.Size < 0 {
			return invalid("file %q: negative size %d", f.Path, f.Size)
		}
		switch {
		case m.DigestsPending && f.Digest != "":
			return invalid("file %q has a digest, but the manifest says its digests are pending", f.Path)
		case m.DigestsPending:
		default:
			if err := validSHA256(f.Digest); err != nil {
				return invalid("file %q: digest %q: %v", f.Path, f.Digest, err)
			}
		}
	}
	if m.Spec == "" {
		return invalid("spec file name is missing")
	}
	if !seen[m.Spec] {
		return invalid("spec %q is not among the listed files", m.Spec)
	}
	if m.RootfsDiff != "" && !seen[m.RootfsDiff] {
		return invalid("rootfs diff %q is not among the listed files", m.RootfsDiff)
	}
	if m.RootfsChanges != "" && !seen[m.RootfsChanges] {
		return invalid("rootfs changes %q are not among the listed files", m.RootfsChanges)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidManifest}, args...)...)
}

func validSHA256(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("algorithm %s: only sha256 is used", d.Algorithm())
	}
	return nil
}

func checkVersion(v int) error {
	switch {
	case v == FormatVersion:
		return nil
	case v > FormatVersion:
		return fmt.Errorf("%w: format_version %d is newer than this godwit reads (%d): upgrade godwit on this node",
			ErrUnsupportedVersion, v, FormatVersion)
	default:
		return fmt.Errorf("%w: format_version %d is missing or invalid (this godwit reads %d): this is not a godwit checkpoint manifest",
			ErrUnsupportedVersion, v, FormatVersion)
	}
}

// checkPath returns why p may not name a checkpoint file, or "". A file is
// either a plain top-level name or a plain name inside CRIUDir; nothing else
// (no nesting, no "..", no absolute paths) is ever written or accepted.
func checkPath(p string) string {
	if strings.HasPrefix(p, "/") || slices.Contains(strings.Split(p, "/"), "..") {
		return "path escapes the checkpoint directory"
	}
	dir, name, nested := strings.Cut(p, "/")
	if !nested {
		dir, name = "", p
	}
	switch {
	case p == ManifestName:
		return "the manifest cannot list itself"
	case p == CRIUDir:
		return fmt.Sprintf("%s is the CRIU image directory, not a file", CRIUDir)
	case (nested && dir != CRIUDir) || name == "" || name == "." || strings.Contains(name, "/"):
		return fmt.Sprintf("only files at the top level or directly in %s/ are allowed", CRIUDir)
	case strings.ContainsRune(name, 0):
		return "name contains a NUL byte"
	}
	return ""
}

// parseManifest decodes and validates a manifest. The version is checked
// before anything else, so that a future format gets the version message
// rather than a confusing field error.
func parseManifest(data []byte) (*Manifest, error) {
	var head struct {
		FormatVersion int `json:"format_version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("%w: not valid JSON: %w", ErrInvalidManifest, err)
	}
	if err := checkVersion(head.FormatVersion); err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidManifest, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// errManifestTooLarge: a manifest over maxManifestSize.
var errManifestTooLarge = fmt.Errorf("manifest is larger than %d MiB", maxManifestSize>>20)
