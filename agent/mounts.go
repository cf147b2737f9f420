package agent

import (
	"path/filepath"

	"github.com/godwit/godwit/agent/internal/mountinfo"
)

// isMountPoint reports whether path is the target of a mount, from
// /proc/self/mountinfo: a device comparison cannot tell a bind mount of a
// directory on the same filesystem.
func isMountPoint(path string) (bool, error) {
	path, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false, err
	}
	return mountinfo.IsMountPoint(path)
}
