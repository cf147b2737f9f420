package version

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
)

// ErrNoVersion marks text that does not start with a version number. Its
// text completes Parse's message: `"new" is not a version number`.
var ErrNoVersion = errors.New("not a version number")

// Version is a release number. A missing patch level reads as 0, and what
// follows the numbers (Debian's "+ds1", "-rc.1", a kernel's "-generic") is
// ignored: godwit's version rules never depend on it.
type Version struct{ Major, Minor, Patch int }

// pattern is a leading "N.N" or "N.N.N", optionally prefixed by "v" as git
// tags are.
var pattern = regexp.MustCompile(`^v?(\d+)\.(\d+)(?:\.(\d+))?`)

// Parse reads the version number at the start of s. It fails with
// ErrNoVersion when s does not start with one, and with strconv's error when
// a number does not fit in an int.
func Parse(s string) (Version, error) {
	m := pattern.FindStringSubmatch(s)
	if m == nil {
		return Version{}, fmt.Errorf("%q is %w", s, ErrNoVersion)
	}
	var v Version
	var err error
	for i, p := range []*int{&v.Major, &v.Minor, &v.Patch} {
		if m[i+1] == "" {
			continue
		}
		if *p, err = strconv.Atoi(m[i+1]); err != nil {
			return Version{}, fmt.Errorf("%q: %w", s, err)
		}
	}
	return v, nil
}

// Less reports whether v is an older release than o, comparing major, then
// minor, then patch level numerically (1.10 is newer than 1.9).
func (v Version) Less(o Version) bool {
	if v.Major != o.Major {
		return v.Major < o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor < o.Minor
	}
	return v.Patch < o.Patch
}

// String formats v as "major.minor.patch", always with three numbers.
func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }
