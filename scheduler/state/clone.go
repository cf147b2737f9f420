package state

import (
	"maps"
	"slices"
)

// Records in the store are shared by every snapshot that sees them and are
// never changed after they are stored: a writer clones, changes the clone,
// and puts it. The Clone methods copy deeply, and turn empty maps and
// slices into nil so that a record reads the same before and after a JSON
// round trip (a snapshot, a raft log entry).

// Clone returns a deep copy of n.
func (n *Node) Clone() *Node {
	c := *n
	c.Labels = cloneMap(n.Labels)
	c.CPU.Flags = cloneSlice(n.CPU.Flags)
	c.Strategies = cloneSlice(n.Strategies)
	return &c
}

// Clone returns a deep copy of s.
func (s ContainerSpec) Clone() ContainerSpec {
	s.Args = cloneSlice(s.Args)
	s.Env = cloneSlice(s.Env)
	s.Labels = cloneMap(s.Labels)
	s.Constraints = cloneSlice(s.Constraints)
	return s
}

// Clone returns a deep copy of c.
func (c *Container) Clone() *Container {
	d := *c
	d.Spec = c.Spec.Clone()
	return &d
}

// Clone returns a deep copy of i.
func (i *Image) Clone() *Image {
	d := *i
	d.Layers = cloneSlice(i.Layers)
	return &d
}

func cloneMap[M ~map[K]V, K comparable, V any](m M) M {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

func cloneSlice[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}
