package image

import (
	_ "crypto/sha512" // lets go-digest verify sha512 blobs in OCI layouts
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"runtime"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	ociLayoutFile      = ocispec.ImageLayoutFile // "oci-layout"
	ociIndexFile       = "index.json"
	ociBlobsDir        = ocispec.ImageBlobsDir // "blobs"
	dockerManifestFile = "manifest.json"

	// maxJSONSize bounds a manifest, index or config read into memory.
	maxJSONSize = 4 << 20
	// maxIndexDepth bounds nested image indexes.
	maxIndexDepth = 4

	// annotationContainerdName is the full reference containerd and Docker
	// (25 and later) put on an OCI layout's index entries; the OCI
	// ref.name annotation there is often only the tag.
	annotationContainerdName = "io.containerd.image.name"

	// Docker's schema 2 media types, which OCI layouts written by Docker
	// and others still carry.
	dockerManifest      = "application/vnd.docker.distribution.manifest.v2+json"
	dockerManifestList  = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerConfig        = "application/vnd.docker.container.image.v1+json"
	dockerLayer         = "application/vnd.docker.image.rootfs.diff.tar"
	dockerLayerGzip     = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	dockerLayerZstd     = "application/vnd.docker.image.rootfs.diff.tar.zstd"
	dockerForeignLayer  = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	rootfsTypeLayers    = "layers"
	requiredImageOS     = "linux"
	dockerHubPrefix     = "docker.io/"
	dockerLibraryPrefix = "library/"
)

// Layer compression is sniffed, not taken from the media type; the media
// type only has to say "filesystem layer".
var layerMediaTypes = []string{
	ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd,
	ocispec.MediaTypeImageLayerNonDistributable, ocispec.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck // still found in old layouts
	ocispec.MediaTypeImageLayerNonDistributableZstd, //nolint:staticcheck // still found in old layouts
	dockerLayer, dockerLayerGzip, dockerLayerZstd, dockerForeignLayer,
}

// parseOCI reads an OCI image layout: oci-layout, index.json, then the
// manifest and config blobs, every one verified against its descriptor.
func parseOCI(t *tarball, name string) (*plan, error) {
	b, err := t.readFile(ociLayoutFile)
	if err != nil {
		return nil, invalidf("OCI layout: %s: %w", ociLayoutFile, err)
	}
	var layout ocispec.ImageLayout
	if err := json.Unmarshal(b, &layout); err != nil {
		return nil, invalidf("OCI layout: %s is not valid JSON: %w", ociLayoutFile, err)
	}
	if layout.Version != ocispec.ImageLayoutVersion {
		return nil, invalidf("OCI layout: %s says version %q; godwit reads %q", ociLayoutFile, layout.Version, ocispec.ImageLayoutVersion)
	}
	b, err = t.readFile(ociIndexFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, invalidf("OCI layout: %s is missing from the tarball", ociIndexFile)
	}
	if err != nil {
		return nil, invalidf("OCI layout: %s: %w", ociIndexFile, err)
	}
	var index ocispec.Index
	if err := json.Unmarshal(b, &index); err != nil {
		return nil, invalidf("OCI layout: %s is not valid JSON: %w", ociIndexFile, err)
	}
	top, manifestBytes, err := pickManifest(t, index.Manifests, name, ociIndexFile, 0)
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(manifestBytes, &m); err != nil {
		return nil, invalidf("manifest %s is not valid JSON: %w", top.Digest, err)
	}
	if m.Config.MediaType != ocispec.MediaTypeImageConfig && m.Config.MediaType != dockerConfig {
		return nil, invalidf("manifest %s is not a container image: its config has media type %q", top.Digest, m.Config.MediaType)
	}
	configBytes, err := readBlob(t, m.Config, "config", "manifest")
	if err != nil {
		return nil, err
	}
	p, diffIDs, err := planFromConfig(configBytes, m.Config.Digest.String(), len(m.Layers))
	if err != nil {
		return nil, err
	}
	p.format, p.id, p.name = FormatOCI, m.Config.Digest, nameFromAnnotations(top.Annotations)
	for i, l := range m.Layers {
		if !slices.Contains(layerMediaTypes, l.MediaType) {
			return nil, invalidf("layer %d (%s) has media type %q, which is not a filesystem layer", i+1, l.Digest, l.MediaType)
		}
		blobPath, err := blobPath(l.Digest)
		if err != nil {
			return nil, invalidf("layer %d: %w", i+1, err)
		}
		p.layers = append(p.layers, layerSource{
			label:     "layer " + l.Digest.String(),
			open:      openMember(t, blobPath),
			blob:      l.Digest,
			blobSize:  l.Size,
			blobWho:   "manifest",
			diffID:    diffIDs[i],
			diffIDWho: fmt.Sprintf("config diff_ids[%d]", i),
		})
	}
	return p, nil
}

// pickManifest chooses the one image manifest for this platform among an
// index's entries (following nested indexes), reads and verifies it, and
// returns it with the top-level descriptor, which carries the name.
func pickManifest(t *tarball, descs []ocispec.Descriptor, name, where string, depth int) (ocispec.Descriptor, []byte, error) {
	platform := requiredImageOS + "/" + runtime.GOARCH
	var candidates []ocispec.Descriptor
	for _, d := range descs {
		switch d.MediaType {
		case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, dockerManifest, dockerManifestList, "":
		default:
			continue // attestations, signatures and other artifacts
		}
		if d.Platform != nil && (d.Platform.OS != requiredImageOS || d.Platform.Architecture != runtime.GOARCH) {
			continue
		}
		candidates = append(candidates, d)
	}
	if len(candidates) > 1 && name != "" {
		candidates = slices.DeleteFunc(candidates, func(d ocispec.Descriptor) bool {
			return !slices.Contains(refNames(d.Annotations), name)
		})
	}
	switch {
	case len(candidates) == 0:
		return ocispec.Descriptor{}, nil, invalidf("%s lists no image manifest for %s", where, platform)
	case len(candidates) > 1:
		var names []string
		for _, d := range candidates {
			if n := nameFromAnnotations(d.Annotations); n != "" {
				names = append(names, n)
			}
		}
		return ocispec.Descriptor{}, nil, invalidf("%s lists %d images for %s (%s): import one by giving its name with --name",
			where, len(candidates), platform, strings.Join(names, ", "))
	}
	top := candidates[0]
	b, err := readBlob(t, top, "manifest", where)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	mediaType := top.MediaType
	if mediaType == "" {
		var probe struct {
			MediaType string            `json:"mediaType"`
			Manifests []json.RawMessage `json:"manifests"`
		}
		if err := json.Unmarshal(b, &probe); err != nil {
			return ocispec.Descriptor{}, nil, invalidf("manifest %s is not valid JSON: %w", top.Digest, err)
		}
		mediaType = probe.MediaType
		if mediaType == "" && probe.Manifests != nil {
			mediaType = ocispec.MediaTypeImageIndex
		}
	}
	if mediaType != ocispec.MediaTypeImageIndex && mediaType != dockerManifestList {
		return top, b, nil
	}
	if depth >= maxIndexDepth {
		return ocispec.Descriptor{}, nil, invalidf("image index %s nests more than %d levels deep", top.Digest, maxIndexDepth)
	}
	var inner ocispec.Index
	if err := json.Unmarshal(b, &inner); err != nil {
		return ocispec.Descriptor{}, nil, invalidf("image index %s is not valid JSON: %w", top.Digest, err)
	}
	_, mb, err := pickManifest(t, inner.Manifests, "", "image index "+top.Digest.String(), depth+1)
	return top, mb, err
}

// refNames lists the names an index entry answers to.
func refNames(annotations map[string]string) []string {
	var out []string
	for _, k := range []string{annotationContainerdName, ocispec.AnnotationRefName} {
		if v := annotations[k]; v != "" {
			out = append(out, v, normalizeRef(v))
		}
	}
	return out
}

// nameFromAnnotations derives an image name from an index entry.
func nameFromAnnotations(annotations map[string]string) string {
	if v := annotations[annotationContainerdName]; v != "" {
		return normalizeRef(v)
	}
	return annotations[ocispec.AnnotationRefName]
}

// normalizeRef drops Docker Hub's implicit prefixes, so that an image
// saved as docker.io/library/busybox:latest is named busybox:latest.
func normalizeRef(ref string) string {
	ref = strings.TrimPrefix(ref, dockerHubPrefix)
	return strings.TrimPrefix(ref, dockerLibraryPrefix)
}

// blobPath is where an OCI layout keeps the blob with digest d.
func blobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("bad digest %q: %w", d, err)
	}
	return path.Join(ociBlobsDir, string(d.Algorithm()), d.Encoded()), nil
}

func openMember(t *tarball, name string) func() (io.Reader, error) {
	return func() (io.Reader, error) {
		r, _, err := t.open(name)
		return r, err
	}
}

// readBlob reads a small blob named by a descriptor and verifies its size
// and digest. what names the blob ("manifest", "config"); who is what
// holds the descriptor.
func readBlob(t *tarball, d ocispec.Descriptor, what, who string) ([]byte, error) {
	p, err := blobPath(d.Digest)
	if err != nil {
		return nil, invalidf("%s descriptor in %s: %w", what, who, err)
	}
	m, err := t.member(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, invalidf("%s blob %s (named by %s) is missing from the tarball", what, d.Digest, who)
	}
	if err != nil {
		return nil, invalidf("%s blob %s: %w", what, d.Digest, err)
	}
	if m.size != d.Size {
		return nil, invalidf("%s blob %s: size mismatch: %s says %d bytes, blob is %d", what, d.Digest, who, d.Size, m.size)
	}
	if m.size > maxJSONSize {
		return nil, invalidf("%s blob %s is %d bytes, more than the %d a %s may have", what, d.Digest, m.size, maxJSONSize, what)
	}
	b, err := t.readFile(p)
	if err != nil {
		return nil, fmt.Errorf("read %s blob %s: %w", what, d.Digest, err)
	}
	if got := d.Digest.Algorithm().FromBytes(b); got != d.Digest {
		return nil, invalidf("%s blob %s: digest mismatch: %s says %s, content is %s", what, d.Digest, who, d.Digest, got)
	}
	return b, nil
}

// planFromConfig reads an image config (OCI and Docker share the fields
// godwit uses) and returns a plan with its run settings and its layers'
// diff IDs, which must number nLayers.
func planFromConfig(b []byte, label string, nLayers int) (*plan, []digest.Digest, error) {
	var cfg ocispec.Image
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, nil, invalidf("config %s is not valid JSON: %w", label, err)
	}
	if cfg.OS != "" && cfg.OS != requiredImageOS {
		return nil, nil, invalidf("config %s: the image is for %q; godwit runs %s images", label, cfg.OS, requiredImageOS)
	}
	if cfg.RootFS.Type != rootfsTypeLayers {
		return nil, nil, invalidf("config %s: rootfs.type is %q, want %q", label, cfg.RootFS.Type, rootfsTypeLayers)
	}
	if len(cfg.RootFS.DiffIDs) != nLayers {
		return nil, nil, invalidf("config %s lists %d diff_ids for %d layers", label, len(cfg.RootFS.DiffIDs), nLayers)
	}
	if nLayers == 0 {
		return nil, nil, invalidf("config %s: the image has no layers", label)
	}
	for i, d := range cfg.RootFS.DiffIDs {
		if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
			return nil, nil, invalidf("config %s: diff_ids[%d] %q is not a sha256 digest", label, i, d)
		}
	}
	p := &plan{
		config: Config{
			Entrypoint: cfg.Config.Entrypoint,
			Cmd:        cfg.Config.Cmd,
			Env:        cfg.Config.Env,
			WorkingDir: cfg.Config.WorkingDir,
			User:       cfg.Config.User,
		},
		arch: cfg.Architecture,
	}
	if cfg.Created != nil {
		p.created = cfg.Created.UTC()
	}
	return p, cfg.RootFS.DiffIDs, nil
}

// dockerEntry is one image in a docker save manifest.json.
type dockerEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// parseDocker reads a docker save tarball: manifest.json, the config it
// names (verified when its file name is its digest, as Docker writes it),
// and the layer paths.
func parseDocker(t *tarball, name string) (*plan, error) {
	b, err := t.readFile(dockerManifestFile)
	if err != nil {
		return nil, invalidf("docker tarball: %s: %w", dockerManifestFile, err)
	}
	var entries []dockerEntry
	if err := json.Unmarshal(b, &entries); err != nil {
		return nil, invalidf("docker tarball: %s is not valid JSON: %w", dockerManifestFile, err)
	}
	if len(entries) > 1 && name != "" {
		entries = slices.DeleteFunc(entries, func(e dockerEntry) bool {
			return !slices.ContainsFunc(e.RepoTags, func(tag string) bool { return tag == name || normalizeRef(tag) == name })
		})
	}
	switch {
	case len(entries) == 0 && name != "":
		return nil, invalidf("docker tarball: %s lists no image tagged %q", dockerManifestFile, name)
	case len(entries) == 0:
		return nil, invalidf("docker tarball: %s lists no image", dockerManifestFile)
	case len(entries) > 1:
		var tags []string
		for _, e := range entries {
			tags = append(tags, e.RepoTags...)
		}
		return nil, invalidf("docker tarball holds %d images (%s): import one by giving its tag with --name",
			len(entries), strings.Join(tags, ", "))
	}
	e := entries[0]
	configBytes, err := t.readFile(e.Config)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, invalidf("docker tarball: config %q named by %s is missing from the tarball", e.Config, dockerManifestFile)
	}
	if err != nil {
		return nil, invalidf("docker tarball: config %q: %w", e.Config, err)
	}
	id := digest.FromBytes(configBytes)
	if claimed := digestFromPath(e.Config); claimed != "" && claimed.Algorithm().FromBytes(configBytes) != claimed {
		return nil, invalidf("config %s: digest mismatch: file name says %s, content is %s",
			e.Config, claimed, claimed.Algorithm().FromBytes(configBytes))
	}
	p, diffIDs, err := planFromConfig(configBytes, e.Config, len(e.Layers))
	if err != nil {
		return nil, err
	}
	p.format, p.id = FormatDocker, id
	if len(e.RepoTags) > 0 {
		p.name = normalizeRef(e.RepoTags[0])
	}
	for i, lp := range e.Layers {
		p.layers = append(p.layers, layerSource{
			label:     fmt.Sprintf("layer %d (%s)", i+1, lp),
			open:      openMember(t, path.Clean(lp)),
			blob:      digestFromPath(lp),
			blobSize:  -1,
			blobWho:   "file name",
			diffID:    diffIDs[i],
			diffIDWho: fmt.Sprintf("config diff_ids[%d]", i),
		})
	}
	return p, nil
}

// digestFromPath returns the digest a member's path claims for its
// content ("blobs/sha256/<hex>" or "<hex>.json"), or "".
func digestFromPath(p string) digest.Digest {
	p = path.Clean(p)
	dir, base := path.Split(p)
	var d digest.Digest
	switch {
	case strings.HasPrefix(dir, ociBlobsDir+"/"):
		d = digest.NewDigestFromEncoded(digest.Algorithm(path.Base(dir)), base)
	case strings.HasSuffix(base, ".json"):
		d = digest.NewDigestFromEncoded(digest.SHA256, strings.TrimSuffix(base, ".json"))
	default:
		return ""
	}
	if d.Validate() != nil {
		return ""
	}
	return d
}
