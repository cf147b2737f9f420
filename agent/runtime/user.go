package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

const (
	rootHome = "/root"
	// maxIDFileBytes bounds how much of an image's /etc/passwd or /etc/group
	// is read: the files come from an image and may be hostile.
	maxIDFileBytes = 4 << 20
)

// passwdEntry is one line of /etc/passwd; groupEntry one of /etc/group.
type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

// resolveUser turns "uid[:gid]", "name[:group]" or "" into the process user
// and its home directory. Numeric ids need no passwd entry; names do.
func resolveUser(rootfs, spec string) (specs.User, string, error) {
	if spec == "" {
		spec = "root"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" || (hasGroup && groupPart == "") {
		return specs.User{}, "", fmt.Errorf("%w: user %q: want uid[:gid] or name[:group]", ErrInvalidSpec, spec)
	}
	passwd, err := readPasswd(rootfs)
	if err != nil {
		return specs.User{}, "", err
	}

	var u specs.User
	var entry *passwdEntry
	if uid, ok, err := parseID(userPart); err != nil {
		return specs.User{}, "", fmt.Errorf("%w: user %q: %w", ErrInvalidSpec, spec, err)
	} else if ok {
		u.UID = uid
		entry = findPasswd(passwd, func(e passwdEntry) bool { return e.uid == uid })
	} else {
		entry = findPasswd(passwd, func(e passwdEntry) bool { return e.name == userPart })
		switch {
		case entry != nil:
			u.UID = entry.uid
		case userPart == "root":
			// An image without /etc/passwd still has a root.
		default:
			return specs.User{}, "", fmt.Errorf("%w: user %q is not in the image's /etc/passwd: give a numeric uid", ErrInvalidSpec, userPart)
		}
	}
	if entry != nil {
		u.GID = entry.gid
	}

	home := "/"
	if entry != nil && entry.home != "" {
		home = entry.home
	} else if u.UID == 0 {
		home = rootHome
	}

	groups, err := readGroups(rootfs)
	if err != nil {
		return specs.User{}, "", err
	}
	if hasGroup {
		if gid, ok, err := parseID(groupPart); err != nil {
			return specs.User{}, "", fmt.Errorf("%w: user %q: %w", ErrInvalidSpec, spec, err)
		} else if ok {
			u.GID = gid
		} else {
			g := findGroup(groups, groupPart)
			if g == nil {
				return specs.User{}, "", fmt.Errorf("%w: group %q is not in the image's /etc/group: give a numeric gid", ErrInvalidSpec, groupPart)
			}
			u.GID = g.gid
		}
	}
	// Supplementary groups follow /etc/group membership by name, as login
	// would set them; only a named user can be a member.
	if entry != nil {
		for _, g := range groups {
			if g.gid != u.GID && containsString(g.members, entry.name) {
				u.AdditionalGids = append(u.AdditionalGids, g.gid)
			}
		}
	}
	return u, home, nil
}

// parseID reports whether s is numeric and, if so, its value; a numeric
// value out of range is an error rather than a name.
func parseID(s string) (uint32, bool, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false, nil
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v == math.MaxUint32 {
		return 0, false, fmt.Errorf("id %s is out of range", s)
	}
	return uint32(v), true, nil
}

func readPasswd(rootfs string) ([]passwdEntry, error) {
	var out []passwdEntry
	err := readIDFile(rootfs, "/etc/passwd", func(fields []string) {
		if len(fields) < 6 {
			return
		}
		uid, ok1, err1 := parseID(fields[2])
		gid, ok2, err2 := parseID(fields[3])
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			return
		}
		out = append(out, passwdEntry{name: fields[0], uid: uid, gid: gid, home: fields[5]})
	})
	return out, err
}

func readGroups(rootfs string) ([]groupEntry, error) {
	var out []groupEntry
	err := readIDFile(rootfs, "/etc/group", func(fields []string) {
		if len(fields) < 3 {
			return
		}
		gid, ok, err := parseID(fields[2])
		if !ok || err != nil {
			return
		}
		g := groupEntry{name: fields[0], gid: gid}
		if len(fields) > 3 && fields[3] != "" {
			g.members = strings.Split(fields[3], ",")
		}
		out = append(out, g)
	})
	return out, err
}

// readIDFile calls line for each colon-separated, non-comment line of the
// rootfs file name. The path is resolved inside rootfs, so a symlink in the
// image cannot make the agent read a host file. A missing file is empty.
func readIDFile(rootfs, name string, line func([]string)) error {
	path, err := securejoin.SecureJoin(rootfs, name)
	if err != nil {
		return fmt.Errorf("resolve %s in rootfs %s: %w", name, rootfs, err)
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the image's %s: %w", name, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, maxIDFileBytes)
	for sc.Scan() {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 || b[0] == '#' {
			continue
		}
		line(strings.Split(string(b), ":"))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read the image's %s: %w", name, err)
	}
	return nil
}

func findPasswd(entries []passwdEntry, match func(passwdEntry) bool) *passwdEntry {
	for i := range entries {
		if match(entries[i]) {
			return &entries[i]
		}
	}
	return nil
}

func findGroup(groups []groupEntry, name string) *groupEntry {
	for i := range groups {
		if groups[i].name == name {
			return &groups[i]
		}
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if strings.TrimSpace(v) == s {
			return true
		}
	}
	return false
}
