package config

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Flag is the flag that names a command's configuration file.
const Flag = "config"

// Errors of a configuration file. Every error names the file, and the
// line where the file has one.
var (
	// ErrUnknownKey marks a key that is not a flag of the command.
	ErrUnknownKey = errors.New("unknown key")
	// ErrInvalid marks a file that is not a mapping of keys to values,
	// or a value its flag refuses.
	ErrInvalid = errors.New("invalid configuration")
)

// AddFlag adds --config FILE to cmd and applies the file, when one is
// given, before cmd runs: as cmd's PreRunE, followed by the PreRunE (or
// PreRun) cmd had. Call it after cmd's other flags are defined.
func AddFlag(cmd *cobra.Command) {
	var path string
	cmd.Flags().StringVar(&path, Flag, "",
		"YAML file of settings: keys are this command's long flag names (data-dir: /var/lib/godwit), lists for repeatable flags; a flag on the command line wins over the file")
	next, nextNoErr := cmd.PreRunE, cmd.PreRun
	cmd.PreRun = nil
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if err := Apply(c, path); err != nil {
			return err
		}
		switch {
		case next != nil:
			return next(c, args)
		case nextNoErr != nil:
			nextNoErr(c, args)
		}
		return nil
	}
}

// Apply sets cmd's flags from the YAML file at path, except those given
// on the command line (Changed). A key is a long flag name of cmd itself
// (not an inherited global flag, nor --config or --help); a null value
// leaves its flag alone. A list is accepted by a flag that takes several
// values (pflag.SliceValue) and replaces its default; a scalar is parsed
// as on the command line. An empty path does nothing.
//
// Errors match ErrUnknownKey (naming the key and listing the valid ones)
// or ErrInvalid, or are the file's read error.
func Apply(cmd *cobra.Command, path string) error {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read the configuration file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file, or only comments
	}
	root := resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%w: %s:%d: want a mapping of flag names to values (data-dir: /var/lib/godwit)", ErrInvalid, path, root.Line)
	}
	valid := settable(cmd)
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, value := resolve(root.Content[i]), resolve(root.Content[i+1])
		if key.Kind != yaml.ScalarNode {
			return fmt.Errorf("%w: %s:%d: a key must be a flag name", ErrInvalid, path, key.Line)
		}
		name := key.Value
		f, ok := valid[name]
		if !ok {
			return fmt.Errorf("%s:%d: %w %q for `%s`: the keys are its flags: %s", path, key.Line, ErrUnknownKey, name, cmd.CommandPath(), validNames(valid))
		}
		if line, dup := seen[name]; dup {
			return fmt.Errorf("%w: %s:%d: %s is set twice (first on line %d)", ErrInvalid, path, key.Line, name, line)
		}
		seen[name] = key.Line
		if f.Changed {
			continue // the command line wins
		}
		if err := set(cmd.Flags(), f, value); err != nil {
			return fmt.Errorf("%w: %s:%d: %s: %w", ErrInvalid, path, value.Line, name, err)
		}
	}
	return nil
}

// settable are the flags a file may set: cmd's own, by name.
func settable(cmd *cobra.Command) map[string]*pflag.Flag {
	out := map[string]*pflag.Flag{}
	cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
		if f.Name != Flag && f.Name != "help" {
			out[f.Name] = f
		}
	})
	return out
}

// validNames lists the keys for an error message: the flags shown in
// --help, sorted.
func validNames(flags map[string]*pflag.Flag) string {
	var names []string
	for name, f := range flags {
		if !f.Hidden {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// set gives f the value of node, marking it changed as the command line
// would.
func set(fs *pflag.FlagSet, f *pflag.Flag, node *yaml.Node) error {
	switch node.Kind {
	case yaml.ScalarNode:
		if node.Tag == "!!null" {
			return nil
		}
		return fs.Set(f.Name, node.Value)
	case yaml.SequenceNode:
		list, ok := f.Value.(pflag.SliceValue)
		if !ok {
			return errors.New("takes one value, not a list")
		}
		items := make([]string, 0, len(node.Content))
		for _, item := range node.Content {
			item = resolve(item)
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return fmt.Errorf("line %d: a list item must be a plain value", item.Line)
			}
			items = append(items, item.Value)
		}
		if err := list.Replace(items); err != nil {
			return err
		}
		f.Changed = true
		return nil
	default:
		return errors.New("takes a value or a list, not a mapping")
	}
}

// resolve follows a YAML alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}
