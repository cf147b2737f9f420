package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Path is the mount table of the calling process's mount namespace.
const Path = "/proc/self/mountinfo"

const (
	// mountPointField is the index of the mount point among the fields
	// before the " - " separator.
	mountPointField = 4
	// postFields are the fields after the separator: filesystem type,
	// source and super-block options.
	postFields = 3
	// maxLineLen bounds one line; option lists of overlay mounts with many
	// layers run to several kilobytes, past bufio's default.
	maxLineLen = 1 << 20
	// separator ends the optional fields of a line.
	separator = " - "
	// escapeLen is the length of an octal escape such as \040.
	escapeLen = 4
)

// Mount is one line of mountinfo. FSType, Source and SuperOptions are
// empty when the line has no well-formed part after the separator.
type Mount struct {
	// MountPoint is where the mount is, unescaped, with symlinks already
	// resolved by the kernel.
	MountPoint   string
	FSType       string
	Source       string
	SuperOptions string
}

// Read parses Path.
func Read() ([]Mount, error) {
	f, err := os.Open(Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mounts, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", Path, err)
	}
	return mounts, nil
}

// Parse reads mountinfo lines from r. Lines too short to name a mount
// point are passed over.
func Parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, maxLineLen)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, _ := strings.Cut(sc.Text(), separator)
		fields := strings.Fields(pre)
		if len(fields) <= mountPointField {
			continue
		}
		m := Mount{MountPoint: unescape(fields[mountPointField])}
		if p := strings.Fields(post); len(p) >= postFields {
			m.FSType, m.Source, m.SuperOptions = p[0], p[1], p[2]
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// IsMountPoint reports whether path is the mount point of a mount in this
// process's mount namespace. path is compared as given: resolve symlinks
// first, as the kernel has in mountinfo.
func IsMountPoint(path string) (bool, error) {
	mounts, err := Read()
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(mounts, func(m Mount) bool { return m.MountPoint == path }), nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space, \134 for a
// backslash); a backslash not followed by three octal digits stays.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+escapeLen <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+escapeLen], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += escapeLen - 1
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
