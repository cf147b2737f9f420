package btrfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The btrfs ioctls used here, from the kernel's uapi <linux/btrfs.h>.
// golang.org/x/sys does not define them.

const (
	// btrfsIoctlMagic is BTRFS_IOCTL_MAGIC, the "type" byte of every btrfs
	// ioctl number.
	btrfsIoctlMagic = 0x94
	// pathNameMax is BTRFS_PATH_NAME_MAX: struct btrfs_ioctl_vol_args
	// carries a NUL-terminated name of up to this many bytes.
	pathNameMax = 4087
	// subvolNameMax is BTRFS_SUBVOL_NAME_MAX, the name length in struct
	// btrfs_ioctl_vol_args_v2.
	subvolNameMax = 4039
	// subvolReadOnly is BTRFS_SUBVOL_RDONLY, a flag both of
	// BTRFS_IOC_SNAP_CREATE_V2 and of the subvolume flags word.
	subvolReadOnly = 1 << 1
	// subvolRootIno is BTRFS_FIRST_FREE_OBJECTID: every subvolume's root
	// directory has this inode number, which tells a nested subvolume from
	// a plain directory.
	subvolRootIno = 256
)

// volArgs is struct btrfs_ioctl_vol_args: { __s64 fd; char name[4088]; }.
type volArgs struct {
	fd   int64
	name [pathNameMax + 1]byte
}

// volArgsV2 is struct btrfs_ioctl_vol_args_v2: fd, transid, flags, a
// union of 4 x __u64 (qgroup inherit size and pointer, unused here), and a
// union whose name member is the largest.
type volArgsV2 struct {
	fd      int64
	transid uint64
	flags   uint64
	_       [4]uint64
	name    [subvolNameMax + 1]byte
}

// Linux's _IOC encoding (asm-generic/ioctl.h): direction in bits 30-31,
// argument size in bits 16-29, type in bits 8-15, number in bits 0-7.
const (
	iocWrite     = 1
	iocRead      = 2
	iocNrShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30
)

func ioc(dir, nr, size uintptr) uintptr {
	return dir<<iocDirShift | size<<iocSizeShift | btrfsIoctlMagic<<iocTypeShift | nr<<iocNrShift
}

// The btrfs ioctl numbers: _IOW/_IOR(BTRFS_IOCTL_MAGIC, nr, argument type).
var (
	iocSubvolCreate   = ioc(iocWrite, 14, unsafe.Sizeof(volArgs{}))   // BTRFS_IOC_SUBVOL_CREATE
	iocSnapDestroy    = ioc(iocWrite, 15, unsafe.Sizeof(volArgs{}))   // BTRFS_IOC_SNAP_DESTROY
	iocSnapCreateV2   = ioc(iocWrite, 23, unsafe.Sizeof(volArgsV2{})) // BTRFS_IOC_SNAP_CREATE_V2
	iocSubvolGetFlags = ioc(iocRead, 25, unsafe.Sizeof(uint64(0)))    // BTRFS_IOC_SUBVOL_GETFLAGS
	iocSubvolSetFlags = ioc(iocWrite, 26, unsafe.Sizeof(uint64(0)))   // BTRFS_IOC_SUBVOL_SETFLAGS
)

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

func openDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// setName copies name into an ioctl name field, refusing what the kernel
// would misread: too long, empty, or not a single path component.
func setName(dst []byte, name string) error {
	if name == "" || len(name) >= len(dst) || filepath.Base(name) != name || name == "." || name == ".." {
		return fmt.Errorf("invalid subvolume name %q", name)
	}
	copy(dst, name)
	return nil
}

// createSubvolume creates an empty subvolume at path.
func createSubvolume(path string) error {
	dir, err := openDir(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("create subvolume %s: %w", path, err)
	}
	defer dir.Close()
	var args volArgs
	if err := setName(args.name[:], filepath.Base(path)); err != nil {
		return err
	}
	err = ioctl(int(dir.Fd()), iocSubvolCreate, unsafe.Pointer(&args))
	runtime.KeepAlive(dir)
	if err != nil {
		return fmt.Errorf("create subvolume %s: %w", path, err)
	}
	return nil
}

// snapshotSubvolume creates path as a snapshot of the subvolume src,
// read-only when readOnly.
func snapshotSubvolume(src, path string, readOnly bool) error {
	source, err := openDir(src)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", src, err)
	}
	defer source.Close()
	dir, err := openDir(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("snapshot %s to %s: %w", src, path, err)
	}
	defer dir.Close()
	args := volArgsV2{fd: int64(source.Fd())}
	if readOnly {
		args.flags = subvolReadOnly
	}
	if err := setName(args.name[:], filepath.Base(path)); err != nil {
		return err
	}
	err = ioctl(int(dir.Fd()), iocSnapCreateV2, unsafe.Pointer(&args))
	runtime.KeepAlive(source)
	runtime.KeepAlive(dir)
	if err != nil {
		return fmt.Errorf("snapshot %s to %s: %w", src, path, err)
	}
	return nil
}

// subvolumeFlags reads the flags word of the subvolume at path.
func subvolumeFlags(path string) (uint64, error) {
	f, err := openDir(path)
	if err != nil {
		return 0, fmt.Errorf("subvolume flags of %s: %w", path, err)
	}
	defer f.Close()
	var flags uint64
	err = ioctl(int(f.Fd()), iocSubvolGetFlags, unsafe.Pointer(&flags))
	runtime.KeepAlive(f)
	if err != nil {
		return 0, fmt.Errorf("subvolume flags of %s: %w", path, err)
	}
	return flags, nil
}

// setReadOnly makes the subvolume at path read-only or writable.
func setReadOnly(path string, readOnly bool) error {
	flags, err := subvolumeFlags(path)
	if err != nil {
		return err
	}
	if readOnly {
		flags |= subvolReadOnly
	} else {
		flags &^= subvolReadOnly
	}
	f, err := openDir(path)
	if err != nil {
		return fmt.Errorf("set subvolume %s read-only=%t: %w", path, readOnly, err)
	}
	defer f.Close()
	err = ioctl(int(f.Fd()), iocSubvolSetFlags, unsafe.Pointer(&flags))
	runtime.KeepAlive(f)
	if err != nil {
		return fmt.Errorf("set subvolume %s read-only=%t: %w", path, readOnly, err)
	}
	return nil
}

// isSubvolume reports whether path is the root of a subvolume.
func isSubvolume(path string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false, err
	}
	return st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Ino == subvolRootIno, nil
}

// destroySubvolume deletes the subvolume at path, with any subvolumes a
// container created inside it (the kernel refuses to delete a subvolume
// that still holds others). A path that does not exist is already gone.
func destroySubvolume(path string) error {
	err := destroyOne(path)
	if !errors.Is(err, unix.ENOTEMPTY) {
		return err
	}
	nested, werr := nestedSubvolumes(path)
	if werr != nil {
		return errors.Join(err, werr)
	}
	// Removing a nested subvolume changes the directory that holds it,
	// which a read-only (committed) parent refuses.
	if err := setReadOnly(path, false); err != nil {
		return err
	}
	for _, n := range slices.Backward(nested) { // deepest first
		if err := destroySubvolume(n); err != nil {
			return err
		}
	}
	return destroyOne(path)
}

func destroyOne(path string) error {
	dir, err := openDir(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("delete subvolume %s: %w", path, err)
	}
	defer dir.Close()
	var args volArgs
	if err := setName(args.name[:], filepath.Base(path)); err != nil {
		return err
	}
	err = ioctl(int(dir.Fd()), iocSnapDestroy, unsafe.Pointer(&args))
	runtime.KeepAlive(dir)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete subvolume %s: %w", path, err)
	}
	return nil
}

// nestedSubvolumes lists the subvolumes directly or indirectly inside the
// subvolume root, parents before children.
func nestedSubvolumes(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root || !d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Ino == subvolRootIno {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find subvolumes inside %s: %w", root, err)
	}
	return out, nil
}
