package image

import (
	_ "crypto/sha256" // registers sha256 for go-digest
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// Format is the kind of tarball an image was imported from.
type Format string

const (
	FormatOCI    Format = "oci"
	FormatDocker Format = "docker"
	FormatRootfs Format = "rootfs"
)

// Layer is one filesystem layer of an image.
type Layer struct {
	// Digest is the sha256 of the uncompressed layer tar (the OCI diff ID),
	// and the store's address for it.
	Digest digest.Digest `json:"digest"`
	// Size is the uncompressed size in bytes.
	Size int64 `json:"size"`
}

// Config is what an image's config says about how to run it; empty for a
// rootfs import.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Image is one named image in the store.
type Image struct {
	Name string `json:"name"`
	// ID is the config digest (oci, docker) or the single layer's digest
	// (rootfs). Two names may share one ID.
	ID     digest.Digest `json:"id"`
	Format Format        `json:"format"`
	// Layers are ordered from the base up.
	Layers []Layer `json:"layers"`
	Config Config  `json:"config"`
	// Size is the sum of the layers' uncompressed sizes.
	Size int64 `json:"size"`
	// Created is the config's creation time, or the import time when the
	// config has none.
	Created time.Time `json:"created"`
	// Imported is when this node imported the image.
	Imported time.Time `json:"imported"`
}

const (
	indexFile      = "index.json"
	layersDir      = "layers"
	tmpDir         = "tmp"
	layerExt       = ".tar.zst"
	indexVersion   = 1
	dirPerm        = 0o700
	filePerm       = 0o600
	maxNameLength  = 255
	minIDPrefixLen = 6
	// defaultTag is tried when a reference without a tag names no image.
	defaultTag = "latest"
)

// namePattern is what an image name may contain: the characters of image
// references (registry/repo:tag@digest), so that names read like Docker's.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$`)

// indexDoc is index.json.
type indexDoc struct {
	Version int     `json:"version"`
	Images  []Image `json:"images"`
}

// Store is a node's content-addressed image store. It is safe for
// concurrent use; imports do their heavy work in parallel and take the
// lock only to move verified layers into place and write the index.
type Store struct {
	root string
	log  *slog.Logger

	mu     sync.Mutex
	images []Image // sorted by name; replaced, never mutated in place
}

// Open opens (creating if needed) the store at root, normally
// <data-dir>/images. It empties root/tmp, left over from an import that
// crashed, and removes layer files no image references.
func Open(root string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{root: root, log: log.With("component", "images")}
	for _, d := range []string{root, s.layerDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, dirPerm); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
	}
	if err := s.clearTmp(); err != nil {
		return nil, err
	}
	images, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	s.images = images
	if err := s.collectGarbage(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) layerDir() string { return filepath.Join(s.root, layersDir, string(digest.SHA256)) }
func (s *Store) tmpDir() string   { return filepath.Join(s.root, tmpDir) }
func (s *Store) layerPath(d digest.Digest) string {
	return filepath.Join(s.layerDir(), d.Encoded()+layerExt)
}

func (s *Store) clearTmp() error {
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return fmt.Errorf("open image store: %w", err)
	}
	for _, e := range entries {
		p := filepath.Join(s.tmpDir(), e.Name())
		s.log.Info("removing leftover of an interrupted import", "path", p)
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("open image store: remove %s: %w", p, err)
		}
	}
	return nil
}

func (s *Store) readIndex() ([]Image, error) {
	b, err := os.ReadFile(filepath.Join(s.root, indexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open image store: %w", err)
	}
	var doc indexDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("open image store: %s is corrupt: %w", filepath.Join(s.root, indexFile), err)
	}
	if doc.Version != indexVersion {
		return nil, fmt.Errorf("open image store: %s has version %d, this godwit reads %d",
			filepath.Join(s.root, indexFile), doc.Version, indexVersion)
	}
	return doc.Images, nil
}

// writeIndex replaces index.json atomically (write, fsync, rename, fsync
// the directory): it is the commit point of imports and removals.
func (s *Store) writeIndex(images []Image) error {
	b, err := json.MarshalIndent(indexDoc{Version: indexVersion, Images: images}, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(s.tmpDir(), "index-*.json")
	if err != nil {
		return fmt.Errorf("write image index: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.root, indexFile))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write image index: %w", err)
	}
	return syncDir(s.root)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// collectGarbage removes layer files that no image references: what an
// interrupted import or removal left behind.
func (s *Store) collectGarbage() error {
	used := s.usedLayers(s.images)
	entries, err := os.ReadDir(s.layerDir())
	if err != nil {
		return fmt.Errorf("open image store: %w", err)
	}
	for _, e := range entries {
		hex, ok := strings.CutSuffix(e.Name(), layerExt)
		if ok && used[digest.NewDigestFromEncoded(digest.SHA256, hex)] {
			continue
		}
		p := filepath.Join(s.layerDir(), e.Name())
		s.log.Info("removing unreferenced layer", "path", p)
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("open image store: remove %s: %w", p, err)
		}
	}
	for d := range used {
		if !s.HasLayer(d) {
			s.log.Warn("layer missing from the image store; remove the images that use it and import them again", "layer", d)
		}
	}
	return nil
}

func (s *Store) usedLayers(images []Image) map[digest.Digest]bool {
	used := map[digest.Digest]bool{}
	for _, img := range images {
		for _, l := range img.Layers {
			used[l.Digest] = true
		}
	}
	return used
}

// List returns every image, sorted by name.
func (s *Store) List() ([]Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Image, len(s.images))
	for i, img := range s.images {
		out[i] = cloneImage(img)
	}
	return out, nil
}

func cloneImage(img Image) Image {
	img.Layers = slices.Clone(img.Layers)
	img.Config.Entrypoint = slices.Clone(img.Config.Entrypoint)
	img.Config.Cmd = slices.Clone(img.Config.Cmd)
	img.Config.Env = slices.Clone(img.Config.Env)
	return img
}

// Get finds an image by name (NAME, or NAME:latest when NAME has no tag),
// by full ID, or by a unique ID prefix of at least six hex digits (with or
// without "sha256:"). When several names share the ID, the first by name
// is returned.
func (s *Store) Get(ref string) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	matches, err := s.resolve(ref)
	if err != nil {
		return nil, err
	}
	img := cloneImage(matches[0])
	return &img, nil
}

// resolve returns the images ref names: one by name, or every name of one
// ID. Callers hold s.mu.
func (s *Store) resolve(ref string) ([]Image, error) {
	for _, candidate := range []string{ref, withDefaultTag(ref)} {
		if candidate == "" {
			continue
		}
		if i := s.indexOf(candidate); i >= 0 {
			return []Image{s.images[i]}, nil
		}
	}
	prefix, ok := idPrefix(ref)
	if !ok {
		return nil, notFound(ref)
	}
	var matches []Image
	ids := map[digest.Digest]bool{}
	for _, img := range s.images {
		if strings.HasPrefix(img.ID.Encoded(), prefix) {
			matches = append(matches, img)
			ids[img.ID] = true
		}
	}
	switch {
	case len(matches) == 0:
		return nil, notFound(ref)
	case len(ids) > 1:
		return nil, invalidf("image ID prefix %q is ambiguous (%d images): give more digits or the name", ref, len(ids))
	}
	return matches, nil
}

func notFound(ref string) error {
	return fmt.Errorf("image %q: %w; list images with \"godwit image ls\"", ref, ErrNotFound)
}

// withDefaultTag returns ref:latest when ref has no tag, else "".
func withDefaultTag(ref string) string {
	last := ref[strings.LastIndexByte(ref, '/')+1:]
	if ref == "" || strings.ContainsAny(last, ":@") {
		return ""
	}
	return ref + ":" + defaultTag
}

// idPrefix returns the lowercase hex of ref when ref can be an image ID or
// ID prefix.
func idPrefix(ref string) (string, bool) {
	hex := strings.TrimPrefix(ref, string(digest.SHA256)+":")
	if len(hex) < minIDPrefixLen || len(hex) > digest.SHA256.Size()*2 {
		return "", false
	}
	for _, c := range hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", false
		}
	}
	return hex, true
}

// indexOf returns the position of the image called name, or -1. Callers
// hold s.mu.
func (s *Store) indexOf(name string) int {
	i, ok := slices.BinarySearchFunc(s.images, name, func(img Image, n string) int { return strings.Compare(img.Name, n) })
	if !ok {
		return -1
	}
	return i
}

// Remove removes the image ref names, and every layer no other image uses.
// An ID that several names share is refused: remove them by name. The
// caller checks first that no container uses the image.
func (s *Store) Remove(ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	matches, err := s.resolve(ref)
	if err != nil {
		return err
	}
	if len(matches) > 1 {
		names := make([]string, len(matches))
		for i, m := range matches {
			names[i] = m.Name
		}
		return invalidf("image ID %s has several names (%s): remove them by name", matches[0].ID, strings.Join(names, ", "))
	}
	img := matches[0]
	remaining := slices.DeleteFunc(slices.Clone(s.images), func(i Image) bool { return i.Name == img.Name })
	if err := s.writeIndex(remaining); err != nil {
		return fmt.Errorf("remove image %s: %w", img.Name, err)
	}
	s.images = remaining
	used := s.usedLayers(remaining)
	for _, l := range img.Layers {
		if used[l.Digest] {
			continue
		}
		if err := os.Remove(s.layerPath(l.Digest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// The index no longer references it; Open collects it later.
			s.log.Warn("could not remove unused layer", "layer", l.Digest, "err", err)
		}
	}
	s.log.Info("image removed", "name", img.Name, "id", img.ID)
	return nil
}

// HasLayer reports whether the layer with this uncompressed digest is
// stored.
func (s *Store) HasLayer(d digest.Digest) bool {
	if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return false
	}
	_, err := os.Stat(s.layerPath(d))
	return err == nil
}

// OpenLayer returns the uncompressed tar of the layer with this digest.
// The content is verified as it is read: if the stored bytes no longer
// hash to d, the final Read returns an error instead of io.EOF, so a
// consumer that reads to the end never silently uses a corrupt layer.
func (s *Store) OpenLayer(d digest.Digest) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return nil, invalidf("layer digest %q is not a sha256 digest", d)
	}
	f, err := os.Open(s.layerPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("layer %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open layer %s: %w", d, err)
	}
	dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open layer %s: %w", d, err)
	}
	return &verifyingReader{d: d, dec: dec, f: f, v: d.Verifier()}, nil
}

type verifyingReader struct {
	d   digest.Digest
	dec *zstd.Decoder
	f   *os.File
	v   digest.Verifier
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	n, err := r.dec.Read(p)
	r.v.Write(p[:n])
	if err == io.EOF && !r.v.Verified() {
		return n, fmt.Errorf("layer %s: stored content does not match its digest: remove the images that use it and import them again", r.d)
	}
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("layer %s: read stored content: %w", r.d, err)
	}
	return n, err
}

func (r *verifyingReader) Close() error {
	r.dec.Close()
	return r.f.Close()
}

// validName checks an image name given by the user or the tarball.
func validName(name string) error {
	if len(name) > maxNameLength || !namePattern.MatchString(name) {
		return invalidf("image name %q is not valid: use letters, digits and . _ - : / @ +, at most %d characters", name, maxNameLength)
	}
	if _, ok := idPrefix(name); ok {
		return invalidf("image name %q looks like an image ID; pick a name with a letter beyond a-f", name)
	}
	return nil
}

// nameTaken returns ErrExists, worded for the operator, when name is used.
// Callers hold s.mu.
func (s *Store) nameTaken(name string) error {
	if i := s.indexOf(name); i >= 0 {
		return fmt.Errorf("image name %q is used by image %s: %w; remove it with \"godwit image rm %s\" or import with --name NAME",
			name, s.images[i].ID, ErrExists, name)
	}
	return nil
}
