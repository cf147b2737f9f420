package bundle

import (
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Receipts beyond an import: a checkpoint completed or linked on the
// node that restores it keeps the receipt that spares its restore a
// second pass over every byte.

// WriteManifestWithReceipt is WriteManifest that also returns the receipt
// of what it digested, for Receipt.Verify moments later: the one pass
// over the files both digests them for the manifest and vouches for them
// before the restore. A file is stamped only if its stamp is the same
// before and after it was read (nothing wrote it meanwhile); one that
// changed is left out of the receipt and digested again by Verify.
func WriteManifestWithReceipt(dir string, m *Manifest) (*Receipt, error) {
	files, err := scan(dir)
	if err != nil {
		return nil, err
	}
	stamps := make(map[string]fileStamp, len(files))
	for i := range files {
		size, d, stamp, steady, err := hashFileStamped(dir, files[i].Path)
		if err != nil {
			return nil, dirError(files[i].Path, err, "digest: %v", err)
		}
		files[i].Size, files[i].Digest = size, d
		if steady {
			stamps[files[i].Path] = stamp
		}
	}
	m.Files, m.DigestsPending = files, false
	if err := writeManifest(dir, m); err != nil {
		return nil, err
	}
	_, data, err := readManifestFile(dir)
	if err != nil {
		return nil, err
	}
	r := newReceipt(data, len(stamps))
	for p, s := range stamps {
		r.files[p] = s
	}
	return r, nil
}

// hashFileStamped is hashFile that also stamps the file: steady says
// whether its stamp was the same before and after the read.
func hashFileStamped(dir, p string) (size int64, d digest.Digest, stamp fileStamp, steady bool, err error) {
	f, err := openFile(dir, p)
	if err != nil {
		return 0, "", fileStamp{}, false, err
	}
	defer f.Close()
	before, err := statFile(f)
	if err != nil {
		return 0, "", fileStamp{}, false, err
	}
	h := sha256.New()
	// Reading the next chunk overlaps hashing this one.
	if size, err = newReadAhead(f).WriteTo(h); err != nil {
		return 0, "", fileStamp{}, false, err
	}
	after, err := statFile(f)
	if err != nil {
		return 0, "", fileStamp{}, false, err
	}
	return size, digest.NewDigest(digest.SHA256, h), after, before == after, nil
}

// Link hard-links every file of the directory dir/sub (a checkpoint's
// CRIUDir, say) into the new directory dst, copying where a link cannot
// be made, and keeps r good for those files: a link changes a file's
// ctime, which would otherwise make Verify digest every linked file
// again. A file's stamp is carried over only when it matched r before the
// link and nothing but its ctime changed across it; any other file keeps
// its old stamp and is digested by Verify as before. A nil Receipt links
// only.
func (r *Receipt) Link(dir, sub, dst string) error {
	src := filepath.Join(dir, filepath.FromSlash(sub))
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		key := strings.TrimPrefix(sub+"/"+e.Name(), "/")
		var before unix.Stat_t
		stamped := false
		if r != nil {
			want, ok := r.files[key]
			stamped = ok && unix.Lstat(from, &before) == nil && stampOf(&before) == want
		}
		if err := os.Link(from, to); err != nil {
			if err := copyRegular(from, to); err != nil {
				return err
			}
			continue
		}
		if !stamped {
			continue
		}
		var after unix.Stat_t
		if unix.Lstat(from, &after) != nil {
			continue
		}
		b, a := stampOf(&before), stampOf(&after)
		if b.ctime = a.ctime; b == a {
			r.files[key] = a
		}
	}
	return nil
}

// copyRegular copies the regular file from to the new file to.
func copyRegular(from, to string) error {
	in, err := os.OpenFile(from, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		return errors.Join(err, out.Close())
	}
	return out.Close()
}
