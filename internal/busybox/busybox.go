// Package busybox builds the smallest useful image there is without a
// registry: busybox-static with its applets linked, as a root filesystem
// or a rootfs tarball. Tests, benchmarks and `godwit agent --dev` (which
// offers it as the image "busybox") use it.
package busybox

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Applets are the commands the image links to busybox.
var Applets = []string{
	"sh", "ash", "cat", "echo", "date", "sleep", "ls", "wc", "httpd", "nc", "mkdir",
	"rm", "true", "false", "env", "id", "hostname", "ps", "kill", "dd", "head", "tail", "seq", "yes",
}

// Path is the static busybox (Debian's busybox-static) the image is built
// from.
const Path = "/bin/busybox"

// WriteRootfs makes a minimal root filesystem in dir: /bin/busybox (the
// static one from Debian's busybox-static, at Path) and relative symlinks
// to it for Applets, /etc/passwd with root, and the usual empty dirs.
func WriteRootfs(dir string) error {
	for _, d := range []string{"bin", "tmp", "etc", "proc", "sys", "dev", "root", "www"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(Path)
	if err != nil {
		return fmt.Errorf("busybox-static is needed at %s (scripts/install-deps.sh installs it): %w", Path, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	for _, a := range Applets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0:root:/:/bin/sh\n"), 0o644)
}

// WriteTar writes a plain rootfs tarball of WriteRootfs's tree to path,
// as `tar -C ROOTFS -cf path .` would.
func WriteTar(path string) error {
	root, err := os.MkdirTemp("", "godwit-busybox-rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	if err := WriteRootfs(root); err != nil {
		return err
	}
	if err := TarDir(root, path); err != nil {
		return fmt.Errorf("write busybox tarball %s: %w", path, err)
	}
	return nil
}

// TarDir writes the tree under root to a plain tarball at path, with
// names relative to root ("./bin/sh"), as `tar -C root -cf path .` would.
func TarDir(root, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = "./" + filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
