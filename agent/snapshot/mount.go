package snapshot

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount types that snapshotters return besides a filesystem type such as
// "overlay".
const (
	// MountTypeBind is a bind mount of Source (a directory) onto the target.
	MountTypeBind = "bind"
)

// Mount is one mount(2) call that presents (part of) a snapshot. Options
// are fstab-style: flags such as "ro", "bind" or "nosuid" become mount
// flags, anything else (such as "lowerdir=...") is passed to the
// filesystem as data.
type Mount struct {
	Type    string
	Source  string
	Options []string
}

// mountFlag is what one fstab-style option does to the mount flags.
type mountFlag struct {
	clear bool // the option clears the flag instead of setting it
	flag  uintptr
}

// mountFlags maps the options that are flags rather than filesystem data.
var mountFlags = map[string]mountFlag{
	"ro":          {flag: unix.MS_RDONLY},
	"rw":          {clear: true, flag: unix.MS_RDONLY},
	"bind":        {flag: unix.MS_BIND},
	"rbind":       {flag: unix.MS_BIND | unix.MS_REC},
	"nosuid":      {flag: unix.MS_NOSUID},
	"suid":        {clear: true, flag: unix.MS_NOSUID},
	"nodev":       {flag: unix.MS_NODEV},
	"dev":         {clear: true, flag: unix.MS_NODEV},
	"noexec":      {flag: unix.MS_NOEXEC},
	"exec":        {clear: true, flag: unix.MS_NOEXEC},
	"noatime":     {flag: unix.MS_NOATIME},
	"relatime":    {flag: unix.MS_RELATIME},
	"strictatime": {flag: unix.MS_STRICTATIME},
	"sync":        {flag: unix.MS_SYNCHRONOUS},
	"async":       {clear: true, flag: unix.MS_SYNCHRONOUS},
}

// ErrMountOptionsTooLong: the kernel copies at most one page of mount data,
// so longer option strings (many overlay layers) would be cut off.
var ErrMountOptionsTooLong = errors.New("mount options exceed the kernel's one-page limit")

// MaxMountDataLen is the longest filesystem data string mount(2) accepts:
// one page including the terminating NUL.
func MaxMountDataLen() int { return unix.Getpagesize() - 1 }

// parseOptions splits fstab-style options into mount flags and the data
// string for the filesystem.
func parseOptions(options []string) (flags uintptr, data string) {
	var rest []string
	for _, o := range options {
		f, ok := mountFlags[o]
		switch {
		case !ok:
			rest = append(rest, o)
		case f.clear:
			flags &^= f.flag
		default:
			flags |= f.flag
		}
	}
	return flags, strings.Join(rest, ",")
}

// DataLen is the length of the filesystem data string the mount passes to
// the kernel; it must not exceed MaxMountDataLen.
func (m Mount) DataLen() int {
	_, data := parseOptions(m.Options)
	return len(data)
}

// Mount mounts m onto the existing directory target.
func (m Mount) Mount(target string) error {
	flags, data := parseOptions(m.Options)
	if len(data) > MaxMountDataLen() {
		return fmt.Errorf("mount %s on %s: data is %d bytes, limit %d: %w",
			m.Type, target, len(data), MaxMountDataLen(), ErrMountOptionsTooLong)
	}
	if m.Type == MountTypeBind {
		flags |= unix.MS_BIND
	}
	if flags&unix.MS_BIND == 0 {
		if err := unix.Mount(m.Source, target, m.Type, flags, data); err != nil {
			return fmt.Errorf("mount %s %s on %s: %w", m.Type, m.Source, target, err)
		}
		return nil
	}

	// The kernel ignores every flag but MS_REC on a new bind mount; "ro"
	// and friends take effect only through a remount of the bind.
	if err := unix.Mount(m.Source, target, "", flags&(unix.MS_BIND|unix.MS_REC), ""); err != nil {
		return fmt.Errorf("bind mount %s on %s: %w", m.Source, target, err)
	}
	if extra := flags &^ (unix.MS_BIND | unix.MS_REC); extra != 0 {
		if err := unix.Mount("", target, "", extra|unix.MS_BIND|unix.MS_REMOUNT, ""); err != nil {
			return errors.Join(
				fmt.Errorf("remount bind of %s on %s with %v: %w", m.Source, target, m.Options, err),
				Unmount(target))
		}
	}
	return nil
}

// MountAll mounts each of mounts onto target in order; the last one is on
// top. If one fails, those already mounted are unmounted again.
func MountAll(mounts []Mount, target string) error {
	for i, m := range mounts {
		if err := m.Mount(target); err != nil {
			for range i {
				err = errors.Join(err, unmountOnce(target))
			}
			return err
		}
	}
	return nil
}

// maxStackedUnmounts bounds Unmount's loop over mounts stacked on one
// target, so a target that keeps reporting success cannot spin forever.
const maxStackedUnmounts = 32

// Unmount removes every mount stacked on target. A target that is not a
// mount point, or does not exist, is not an error, so Unmount is safe to
// call again and from cleanup paths. A busy mount is detached lazily: it
// disappears from the tree at once and the kernel frees it when its last
// user goes.
func Unmount(target string) error {
	for range maxStackedUnmounts {
		err := unmountOnce(target)
		switch {
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // nothing (more) is mounted there
		case err != nil:
			return err
		}
	}
	return fmt.Errorf("unmount %s: still mounted after %d unmounts", target, maxStackedUnmounts)
}

// unmountOnce removes the top mount on target, detaching it when busy.
func unmountOnce(target string) error {
	err := unix.Unmount(target, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(target, unix.MNT_DETACH)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}
