package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Detect names the snapshotter that suits dir's filesystem: Btrfs when dir
// is on btrfs, otherwise Overlay. A dir that does not exist yet is judged by
// its nearest existing ancestor, where it would be created.
func Detect(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("detect snapshotter for %s: %w", dir, err)
	}
	for p := abs; ; p = filepath.Dir(p) {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		switch {
		case err == nil:
			if st.Type == unix.BTRFS_SUPER_MAGIC {
				return Btrfs, nil
			}
			return Overlay, nil
		case errors.Is(err, os.ErrNotExist) && p != filepath.Dir(p):
			continue
		default:
			return "", fmt.Errorf("detect snapshotter for %s: statfs %s: %w", dir, p, err)
		}
	}
}
