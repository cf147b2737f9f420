package doctor

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/godwit/godwit/agent/internal/version"
)

// errNoVersion: a tool's or the kernel's version text held no version number
// where one was expected.
var errNoVersion = errors.New("no version number found")

// Each pattern finds where a tool prints its version; its first group is the
// number itself, which version.Parse reads (ignoring "+ds1", "-rc.1", ...).
var (
	// `criu --version` prints "Version: 4.2.1" (and maybe a GitID line).
	criuVersionRE = regexp.MustCompile(`(?m)^Version:\s*(v?\d+\.\d+(?:\.\d+)?)`)
	// `runc --version` prints "runc version 1.3.6+ds1" first.
	runcVersionRE = regexp.MustCompile(`(?m)^runc version\s+(v?\d+\.\d+(?:\.\d+)?)`)
	// uname's release, e.g. "6.18.44-fc-v782".
	kernelVersionRE = regexp.MustCompile(`^(\d+\.\d+(?:\.\d+)?)`)
)

func parseCRIUVersion(out string) (version.Version, error) {
	return matchVersion(criuVersionRE, "criu --version", out)
}

func parseRuncVersion(out string) (version.Version, error) {
	return matchVersion(runcVersionRE, "runc --version", out)
}

func parseKernelVersion(release string) (version.Version, error) {
	return matchVersion(kernelVersionRE, "kernel release", release)
}

func matchVersion(re *regexp.Regexp, what, text string) (version.Version, error) {
	m := re.FindStringSubmatch(text)
	if m == nil {
		return version.Version{}, fmt.Errorf("%s %q: %w", what, firstLine(text), errNoVersion)
	}
	v, err := version.Parse(m[1])
	if err != nil {
		return version.Version{}, fmt.Errorf("%s: %w", what, err)
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
