package doctor

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// errNoVersion: a tool's or the kernel's version text held no version number
// where one was expected.
var errNoVersion = errors.New("no version number found")

// version is a release number; a missing patch level reads as 0, and
// anything after the third number (Debian's "+ds1", "-rc.1") is ignored.
type version struct{ major, minor, patch int }

func (v version) String() string { return fmt.Sprintf("%d.%d.%d", v.major, v.minor, v.patch) }

func (v version) less(o version) bool {
	if v.major != o.major {
		return v.major < o.major
	}
	if v.minor != o.minor {
		return v.minor < o.minor
	}
	return v.patch < o.patch
}

var (
	// `criu --version` prints "Version: 4.2.1" (and maybe a GitID line).
	criuVersionRE = regexp.MustCompile(`(?m)^Version:\s*v?(\d+)\.(\d+)(?:\.(\d+))?`)
	// `runc --version` prints "runc version 1.3.6+ds1" first.
	runcVersionRE = regexp.MustCompile(`(?m)^runc version\s+v?(\d+)\.(\d+)(?:\.(\d+))?`)
	// uname's release, e.g. "6.18.44-fc-v782".
	kernelVersionRE = regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?`)
)

func parseCRIUVersion(out string) (version, error) {
	return matchVersion(criuVersionRE, "criu --version", out)
}

func parseRuncVersion(out string) (version, error) {
	return matchVersion(runcVersionRE, "runc --version", out)
}

func parseKernelVersion(release string) (version, error) {
	return matchVersion(kernelVersionRE, "kernel release", release)
}

func matchVersion(re *regexp.Regexp, what, text string) (version, error) {
	m := re.FindStringSubmatch(text)
	if m == nil {
		return version{}, fmt.Errorf("%s %q: %w", what, firstLine(text), errNoVersion)
	}
	var v version
	var err error
	if v.major, err = strconv.Atoi(m[1]); err != nil {
		return version{}, fmt.Errorf("%s major %q: %w", what, m[1], err)
	}
	if v.minor, err = strconv.Atoi(m[2]); err != nil {
		return version{}, fmt.Errorf("%s minor %q: %w", what, m[2], err)
	}
	if m[3] != "" {
		if v.patch, err = strconv.Atoi(m[3]); err != nil {
			return version{}, fmt.Errorf("%s patch %q: %w", what, m[3], err)
		}
	}
	return v, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
