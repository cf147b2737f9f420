package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/godwit/godwit/agent/archive"
)

// This file builds image tarballs in memory, the way docker save, OCI
// tools and `tar -C rootfs -cf - .` lay them out.

var buildTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// file is one member of a tar built by a test.
type file struct {
	name string
	body string
	typ  byte   // 0: regular file
	link string // symlink or hard link target
	mode int64
}

func tarOf(t *testing.T, files ...file) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Typeflag: f.typ, Linkname: f.link, Mode: f.mode, ModTime: buildTime}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
			if hdr.Typeflag == tar.TypeDir {
				hdr.Mode = 0o755
			}
		}
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %s: %v", f.name, err)
		}
		if _, err := io.WriteString(tw, f.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t *testing.T, b []byte, c archive.Compression) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch c {
	case archive.None:
		return b
	case archive.Gzip:
		w = gzip.NewWriter(&buf)
	case archive.Zstd:
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func layerMediaType(c archive.Compression) string {
	switch c {
	case archive.Gzip:
		return ocispec.MediaTypeImageLayerGzip
	case archive.Zstd:
		return ocispec.MediaTypeImageLayerZstd
	}
	return ocispec.MediaTypeImageLayer
}

// Two layers: a base, and one that changes a file, adds one and whites
// one out. baseLayer/topLayer are uncompressed tars.
func baseLayer(t *testing.T) []byte {
	return tarOf(t,
		file{name: "./", typ: tar.TypeDir},
		file{name: "./bin/", typ: tar.TypeDir},
		file{name: "./bin/hello", body: "#!/bin/sh\necho hello\n", mode: 0o755},
		file{name: "./etc/", typ: tar.TypeDir},
		file{name: "./etc/hostname", body: "base\n"},
		file{name: "./etc/remove-me", body: "gone soon\n"},
		file{name: "./etc/localtime", typ: tar.TypeSymlink, link: "/usr/share/zoneinfo/UTC"},
	)
}

func topLayer(t *testing.T) []byte {
	return tarOf(t,
		file{name: "etc/", typ: tar.TypeDir},
		file{name: "etc/hostname", body: "top\n"},
		file{name: "etc/.wh.remove-me"},
		file{name: "srv/", typ: tar.TypeDir},
		file{name: "srv/data", body: "served\n"},
		file{name: "srv/data-link", typ: tar.TypeLink, link: "srv/data"},
	)
}

// layeredFiles is what the two layers make, path -> content ("->x" for a
// symlink, "/" for a directory).
var layeredFiles = map[string]string{
	"bin": "/", "bin/hello": "#!/bin/sh\necho hello\n",
	"etc": "/", "etc/hostname": "top\n", "etc/localtime": "->/usr/share/zoneinfo/UTC",
	"srv": "/", "srv/data": "served\n", "srv/data-link": "served\n",
}

var testConfig = ocispec.ImageConfig{
	Entrypoint: []string{"/bin/hello"},
	Cmd:        []string{"--loud"},
	Env:        []string{"PATH=/bin", "GREETING=hi"},
	WorkingDir: "/srv",
	User:       "1000:1000",
}

// imageSpec describes an image to build; the tamper hooks let the broken
// input table break one thing at a time.
type imageSpec struct {
	layers      [][]byte // uncompressed
	compression archive.Compression
	refName     string // OCI annotation or docker RepoTag; "" for none
	// annotations replaces the OCI index entry's annotations.
	annotations map[string]string
	// diffIDs overrides the config's rootfs.diff_ids.
	diffIDs []digest.Digest
	// blobOverride replaces a blob's bytes (by its true digest) while the
	// manifest and file name keep the original digest.
	blobOverride map[digest.Digest][]byte
	// omit leaves out tarball members by name.
	omit []string
}

func configJSON(t *testing.T, spec imageSpec) []byte {
	t.Helper()
	diffIDs := spec.diffIDs
	if diffIDs == nil {
		for _, l := range spec.layers {
			diffIDs = append(diffIDs, digest.FromBytes(l))
		}
	}
	created := buildTime
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   testConfig,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// outer writes the tarball's members in order, then compresses it.
func outer(t *testing.T, spec imageSpec, members []file) []byte {
	members = slices.DeleteFunc(members, func(f file) bool { return slices.Contains(spec.omit, f.name) })
	return compress(t, tarOf(t, members...), spec.compression)
}

func (spec imageSpec) blob(b []byte) (digest.Digest, []byte) {
	d := digest.FromBytes(b)
	if o, ok := spec.blobOverride[d]; ok {
		return d, o
	}
	return d, b
}

// buildOCI builds an OCI image layout tarball.
func buildOCI(t *testing.T, spec imageSpec) []byte {
	t.Helper()
	var members []file
	add := func(b []byte) ocispec.Descriptor {
		d, content := spec.blob(b)
		members = append(members, file{name: "blobs/sha256/" + d.Encoded(), body: string(content)})
		return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
	}
	manifest := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest}
	manifest.SchemaVersion = 2
	for _, l := range spec.layers {
		d := add(compress(t, l, spec.compression))
		d.MediaType = layerMediaType(spec.compression)
		manifest.Layers = append(manifest.Layers, d)
	}
	manifest.Config = add(configJSON(t, spec))
	manifest.Config.MediaType = ocispec.MediaTypeImageConfig
	mb, err := json.Marshal(manifest)
	if err != nil {
		t.Fatal(err)
	}
	md := add(mb)
	md.MediaType = ocispec.MediaTypeImageManifest
	md.Platform = &ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if spec.refName != "" {
		md.Annotations = map[string]string{ocispec.AnnotationRefName: spec.refName}
	}
	if spec.annotations != nil {
		md.Annotations = spec.annotations
	}
	index := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}}
	index.SchemaVersion = 2
	ib, err := json.Marshal(index)
	if err != nil {
		t.Fatal(err)
	}
	head := []file{
		{name: "oci-layout", body: `{"imageLayoutVersion":"1.0.0"}`},
		{name: "index.json", body: string(ib)},
		{name: "blobs/", typ: tar.TypeDir},
		{name: "blobs/sha256/", typ: tar.TypeDir},
	}
	return outer(t, spec, append(head, members...))
}

// buildDocker builds a docker save tarball: <id>/layer.tar per layer,
// <config-hex>.json, manifest.json last, as Docker writes them. A layer
// identical to an earlier one is a symlink to it, as Docker writes those.
func buildDocker(t *testing.T, spec imageSpec) []byte {
	t.Helper()
	cfg := configJSON(t, spec)
	cfgName := digest.FromBytes(cfg).Encoded() + ".json"
	var members []file
	var layerPaths []string
	first := map[digest.Digest]string{}
	for i, l := range spec.layers {
		dir := fmt.Sprintf("%064x", i+1) // a v1 layer ID: not a content digest
		p := dir + "/layer.tar"
		members = append(members, file{name: dir + "/", typ: tar.TypeDir}, file{name: dir + "/VERSION", body: "1.0"})
		d, content := spec.blob(compress(t, l, spec.compression))
		if prev, ok := first[d]; ok {
			members = append(members, file{name: p, typ: tar.TypeSymlink, link: "../" + prev})
		} else {
			first[d] = p
			members = append(members, file{name: p, body: string(content)})
		}
		layerPaths = append(layerPaths, p)
	}
	members = append(members, file{name: cfgName, body: string(cfg)})
	entry := dockerEntry{Config: cfgName, Layers: layerPaths}
	if spec.refName != "" {
		entry.RepoTags = []string{spec.refName}
	}
	mb, err := json.Marshal([]dockerEntry{entry})
	if err != nil {
		t.Fatal(err)
	}
	members = append(members, file{name: "manifest.json", body: string(mb)})
	return outer(t, spec, members)
}

// buildRootfs is `tar -C rootfs -cf - .` of the two layers' result.
func buildRootfs(t *testing.T, spec imageSpec) []byte {
	t.Helper()
	return compress(t, rootfsTar(t), spec.compression)
}

func rootfsTar(t *testing.T) []byte {
	return tarOf(t,
		file{name: "./", typ: tar.TypeDir},
		file{name: "./bin/", typ: tar.TypeDir},
		file{name: "./bin/hello", body: "#!/bin/sh\necho hello\n", mode: 0o755},
		file{name: "./etc/", typ: tar.TypeDir},
		file{name: "./etc/hostname", body: "top\n"},
		file{name: "./etc/localtime", typ: tar.TypeSymlink, link: "/usr/share/zoneinfo/UTC"},
		file{name: "./srv/", typ: tar.TypeDir},
		file{name: "./srv/data", body: "served\n"},
		file{name: "./srv/data-link", typ: tar.TypeLink, link: "./srv/data"},
	)
}
