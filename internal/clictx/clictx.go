package clictx

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/pki"
)

const (
	// EnvConfig names the contexts file, overriding the default path.
	EnvConfig = "GODWIT_CONFIG"
	// FileMode is the contexts file's mode: it names a private key.
	FileMode os.FileMode = 0o600
	// dirMode is the mode of a directory Save creates for the file.
	dirMode os.FileMode = 0o700
	// dirName and fileName make the default path under the user's
	// configuration directory.
	dirName  = "godwit"
	fileName = "contexts.json"
	// formatVersion is the version of the file's JSON this package
	// writes; a file of a later version is refused rather than rewritten
	// without what this version does not know.
	formatVersion = 1
)

var (
	// ErrNotFound: no context has the name asked for.
	ErrNotFound = errors.New("no such context")
	// ErrInvalid: a context to save lacks something it needs.
	ErrInvalid = errors.New("invalid context")
)

// validName is what a context may be called: it is typed on command
// lines and printed in messages.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Context is a cluster the CLI can talk to: a scheduler's address and
// how to reach it.
type Context struct {
	Name string
	// Addr is the schedulers' gRPC addresses, host:port, comma-separated:
	// the CLI tries the next when one cannot be reached.
	Addr string
	// TLS are the CLI's CA, certificate and key for the cluster: all
	// three, or none when Insecure. Save makes them absolute paths.
	TLS pki.Files
	// Insecure: the cluster's schedulers speak plaintext (started with
	// --insecure, for one-host use and tests).
	Insecure bool
}

// Validate reports what keeps c from being saved, wrapping ErrInvalid.
func (c Context) Validate() error {
	if !validName.MatchString(c.Name) {
		return fmt.Errorf("%w: name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit", ErrInvalid, c.Name)
	}
	for _, addr := range strings.Split(c.Addr, ",") {
		if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" {
			return fmt.Errorf("%w: context %s: address %q: want HOST:PORT, or several separated by commas", ErrInvalid, c.Name, addr)
		}
	}
	switch missing := c.TLS.Missing(); {
	case c.Insecure && len(missing) < 3:
		return fmt.Errorf("%w: context %s: TLS files and insecure: give one or the other", ErrInvalid, c.Name)
	case !c.Insecure && len(missing) == 3:
		return fmt.Errorf("%w: context %s: no TLS files: give the CA, certificate and key, or mark it insecure (plaintext)", ErrInvalid, c.Name)
	case !c.Insecure && len(missing) > 0:
		return fmt.Errorf("%w: context %s: missing TLS %s: give all three of CA, certificate and key", ErrInvalid, c.Name, strings.Join(missing, " and "))
	}
	return nil
}

// File is the contexts file as loaded.
type File struct {
	// Path is where the file is (or would be, when it does not exist).
	Path string
	// CurrentName names the current context; empty when none is.
	CurrentName string
	// Contexts are sorted by name.
	Contexts []Context
}

// Current returns the current context; false when none is current, or
// when the current name names no context.
func (f *File) Current() (*Context, bool) {
	if f.CurrentName == "" {
		return nil, false
	}
	return f.Get(f.CurrentName)
}

// Get returns the context called name.
func (f *File) Get(name string) (*Context, bool) {
	for i := range f.Contexts {
		if f.Contexts[i].Name == name {
			return &f.Contexts[i], true
		}
	}
	return nil, false
}

// Names lists the contexts' names, sorted.
func (f *File) Names() []string {
	names := make([]string, 0, len(f.Contexts))
	for _, c := range f.Contexts {
		names = append(names, c.Name)
	}
	return names
}

func (f *File) notFound(name string) error {
	if len(f.Contexts) == 0 {
		return fmt.Errorf("context %q: %w: there are none (`godwit dev up` and `godwit context add` make them)", name, ErrNotFound)
	}
	return fmt.Errorf("context %q: %w: known are %s (see `godwit context ls`)", name, ErrNotFound, strings.Join(f.Names(), ", "))
}

// Path is where the contexts file is: $GODWIT_CONFIG, else
// $XDG_CONFIG_HOME/godwit/contexts.json, else
// ~/.config/godwit/contexts.json.
func Path() (string, error) {
	if p := os.Getenv(EnvConfig); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("contexts file: %w: set %s to a file path", err, EnvConfig)
	}
	return filepath.Join(dir, dirName, fileName), nil
}

// Load reads the contexts file. A file that does not exist is an empty
// File with no current context, not an error.
func Load() (*File, error) {
	path, err := Path()
	if err != nil {
		return nil, err
	}
	return load(path)
}

// Save adds c, or replaces the context of the same name, and makes it
// the current one when makeCurrent. It creates the file and its
// directory when needed.
func Save(c Context, makeCurrent bool) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if !c.TLS.IsZero() {
		for _, p := range []*string{&c.TLS.CA, &c.TLS.Cert, &c.TLS.Key} {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return fmt.Errorf("context %s: %w", c.Name, err)
			}
			*p = abs
		}
	}
	return update(func(f *File) error {
		if old, ok := f.Get(c.Name); ok {
			*old = c
		} else {
			f.Contexts = append(f.Contexts, c)
		}
		if makeCurrent {
			f.CurrentName = c.Name
		}
		return nil
	})
}

// Remove deletes the context called name; when it was the current one,
// no context is current afterwards. A name that is not there is
// ErrNotFound.
func Remove(name string) error {
	return update(func(f *File) error {
		i := slices.IndexFunc(f.Contexts, func(c Context) bool { return c.Name == name })
		if i < 0 {
			return f.notFound(name)
		}
		f.Contexts = slices.Delete(f.Contexts, i, i+1)
		if f.CurrentName == name {
			f.CurrentName = ""
		}
		return nil
	})
}

// Use makes the context called name the current one; an empty name
// leaves none current. A name that is not there is ErrNotFound.
func Use(name string) error {
	return update(func(f *File) error {
		if name != "" {
			if _, ok := f.Get(name); !ok {
				return f.notFound(name)
			}
		}
		f.CurrentName = name
		return nil
	})
}

// update changes the file with change, under an exclusive lock on its
// directory so that concurrent updates apply one after the other, and
// writes it atomically. Nothing is written when change fails.
func update(change func(*File) error) error {
	path, err := Path()
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("contexts file %s: %w", path, err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return fmt.Errorf("contexts file %s: %w", path, err)
	}
	defer unlock()
	f, err := load(path)
	if err != nil {
		return err
	}
	if err := change(f); err != nil {
		return err
	}
	return write(f)
}

// lockDir takes an exclusive advisory lock on dir, so that no lock file
// is left beside the contexts file.
func lockDir(dir string) (unlock func(), err error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		d.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { d.Close() }, nil // closing drops the lock
}

// The file's JSON.
type (
	fileJSON struct {
		Version  int           `json:"version"`
		Current  string        `json:"current,omitempty"`
		Contexts []contextJSON `json:"contexts"`
	}
	contextJSON struct {
		Name     string   `json:"name"`
		Addr     string   `json:"addr"`
		TLS      *tlsJSON `json:"tls,omitempty"`
		Insecure bool     `json:"insecure,omitempty"`
	}
	tlsJSON struct {
		CA   string `json:"ca"`
		Cert string `json:"cert"`
		Key  string `json:"key"`
	}
)

func load(path string) (*File, error) {
	f := &File{Path: path}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("contexts file: %w", err)
	}
	var j fileJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("contexts file %s: %w: fix it, or remove it and make the contexts again", path, err)
	}
	if j.Version > formatVersion {
		return nil, fmt.Errorf("contexts file %s: version %d, this godwit knows version %d: use a newer godwit", path, j.Version, formatVersion)
	}
	f.CurrentName = j.Current
	for _, c := range j.Contexts {
		ctx := Context{Name: c.Name, Addr: c.Addr, Insecure: c.Insecure}
		if c.TLS != nil {
			ctx.TLS = pki.Files{CA: c.TLS.CA, Cert: c.TLS.Cert, Key: c.TLS.Key}
		}
		f.Contexts = append(f.Contexts, ctx)
	}
	sortContexts(f.Contexts)
	return f, nil
}

func sortContexts(cs []Context) {
	slices.SortFunc(cs, func(a, b Context) int { return strings.Compare(a.Name, b.Name) })
}

// write replaces the file with f: a temporary file beside it, synced,
// then renamed over it.
func write(f *File) (err error) {
	sortContexts(f.Contexts)
	j := fileJSON{Version: formatVersion, Current: f.CurrentName, Contexts: []contextJSON{}}
	for _, c := range f.Contexts {
		cj := contextJSON{Name: c.Name, Addr: c.Addr, Insecure: c.Insecure}
		if !c.TLS.IsZero() {
			cj.TLS = &tlsJSON{CA: c.TLS.CA, Cert: c.TLS.Cert, Key: c.TLS.Key}
		}
		j.Contexts = append(j.Contexts, cj)
	}
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.Path), "."+filepath.Base(f.Path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write contexts file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes the file 0600 already; say so rather than rely on it.
	if err := tmp.Chmod(FileMode); err != nil {
		return fmt.Errorf("write contexts file: %w", err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		return fmt.Errorf("write contexts file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write contexts file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write contexts file: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("write contexts file: %w", err)
	}
	return nil
}
