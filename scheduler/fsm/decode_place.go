package fsm

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/godwit/godwit/scheduler/state"
)

// PlaceContainers entries are most of the log and every replica decodes
// each one, so they have a decoder of their own: encoding/json's
// reflection was a fifth of the cost of applying a placement. The entry's
// encoding is unchanged (Encode's JSON), and so is what it decodes to:
//
//   - The fast decoder reads the JSON that Encode writes: the command's
//     fields by their exact names, strings without escapes in valid UTF-8,
//     integers, booleans, and any whitespace between tokens.
//   - Anything else (an escape in a string, null, a number with a
//     fraction or an exponent, a name that differs in case, an unknown or
//     repeated name, malformed JSON) makes it give up, and the entry is
//     decoded by encoding/json, as every entry was before: what encoding/json
//     accepts decodes the same, what it refuses is refused with its error.
//   - Empty arrays and objects decode as encoding/json decodes them: empty,
//     not nil.
//
// TestPlaceContainersFastDecoder checks both against each other, and that
// the fast one reads every field Encode writes (a field added to
// ContainerSpec must be added here, or every entry takes the slow path).

// decodePlaceContainers decodes the payload of a PlaceContainers entry.
func decodePlaceContainers(payload []byte) (Command, error) {
	if c, ok := fastPlaceContainers(payload); ok {
		return c, nil
	}
	return decodeAs[PlaceContainers](payload)
}

// fastPlaceContainers decodes payload if it is in the fast decoder's
// subset of JSON; ok is false otherwise.
func fastPlaceContainers(payload []byte) (cmd PlaceContainers, ok bool) {
	s := &jsonScan{b: payload}
	var seen uint8
	s.object(func(key []byte) {
		switch string(key) {
		case "containers":
			s.once(&seen, 1<<0)
			cmd.Containers = []NewContainer{}
			s.array(func() {
				cmd.Containers = append(cmd.Containers, NewContainer{})
				s.newContainer(&cmd.Containers[len(cmd.Containers)-1])
			})
		case "at":
			s.once(&seen, 1<<1)
			cmd.At = s.time()
		default:
			s.bad = true
		}
	})
	s.end()
	if s.bad {
		return PlaceContainers{}, false
	}
	return cmd, true
}

func (s *jsonScan) newContainer(nc *NewContainer) {
	var seen uint8
	s.object(func(key []byte) {
		switch string(key) {
		case "id":
			s.once(&seen, 1<<0)
			nc.ID = s.str()
		case "name":
			s.once(&seen, 1<<1)
			nc.Name = s.str()
		case "spec":
			s.once(&seen, 1<<2)
			s.spec(&nc.Spec)
		case "node":
			s.once(&seen, 1<<3)
			nc.Node = s.str()
		default:
			s.bad = true
		}
	})
}

func (s *jsonScan) spec(sp *state.ContainerSpec) {
	var seen uint16
	once := func(bit uint16) {
		if seen&bit != 0 {
			s.bad = true
		}
		seen |= bit
	}
	s.object(func(key []byte) {
		switch string(key) {
		case "image":
			once(1 << 0)
			sp.Image = s.str()
		case "args":
			once(1 << 1)
			sp.Args = s.strings()
		case "env":
			once(1 << 2)
			sp.Env = s.strings()
		case "working_dir":
			once(1 << 3)
			sp.WorkingDir = s.str()
		case "hostname":
			once(1 << 4)
			sp.Hostname = s.str()
		case "user":
			once(1 << 5)
			sp.User = s.str()
		case "labels":
			once(1 << 6)
			sp.Labels = map[string]string{}
			s.object(func(key []byte) {
				k := string(key)
				if _, dup := sp.Labels[k]; dup {
					s.bad = true
				}
				sp.Labels[k] = s.str()
			})
		case "request":
			once(1 << 7)
			s.resources(&sp.Request)
		case "constraints":
			once(1 << 8)
			sp.Constraints = []state.Constraint{}
			s.array(func() {
				var c state.Constraint
				var seen uint8
				s.object(func(key []byte) {
					switch string(key) {
					case "key":
						s.once(&seen, 1<<0)
						c.Key = s.str()
					case "value":
						s.once(&seen, 1<<1)
						c.Value = s.str()
					default:
						s.bad = true
					}
				})
				sp.Constraints = append(sp.Constraints, c)
			})
		case "node":
			once(1 << 9)
			sp.Node = s.str()
		case "pinned":
			once(1 << 10)
			sp.Pinned = s.bool()
		default:
			s.bad = true
		}
	})
}

func (s *jsonScan) resources(r *state.Resources) {
	var seen uint8
	s.object(func(key []byte) {
		switch string(key) {
		case "milli_cpu":
			s.once(&seen, 1<<0)
			r.MilliCPU = s.int64()
		case "memory_bytes":
			s.once(&seen, 1<<1)
			r.MemoryBytes = s.int64()
		default:
			s.bad = true
		}
	})
}

// jsonScan reads a JSON document in the fast decoder's subset. The first
// thing outside it sets bad; from then on every method returns at once
// with a zero value, and the caller drops what it read.
type jsonScan struct {
	b   []byte
	i   int
	bad bool
}

// once sets bit in seen, and bad if it was set: a name seen twice.
func (s *jsonScan) once(seen *uint8, bit uint8) {
	if *seen&bit != 0 {
		s.bad = true
	}
	*seen |= bit
}

// next skips whitespace and returns the next byte, or 0 at the end.
func (s *jsonScan) next() byte {
	for s.i < len(s.b) {
		switch c := s.b[s.i]; c {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return c
		}
	}
	return 0
}

// expect consumes c, the next byte after whitespace, or sets bad.
func (s *jsonScan) expect(c byte) bool {
	if s.bad || s.next() != c {
		s.bad = true
		return false
	}
	s.i++
	return true
}

// end checks that only whitespace follows.
func (s *jsonScan) end() {
	if s.next() != 0 || s.i != len(s.b) {
		s.bad = true
	}
}

// object reads an object, calling field with each name; field reads the
// value.
func (s *jsonScan) object(field func(key []byte)) {
	if !s.expect('{') {
		return
	}
	if s.next() == '}' {
		s.i++
		return
	}
	for !s.bad {
		key := s.raw()
		if !s.expect(':') {
			return
		}
		field(key)
		if s.bad {
			return
		}
		switch s.next() {
		case ',':
			s.i++
		case '}':
			s.i++
			return
		default:
			s.bad = true
		}
	}
}

// array reads an array, calling elem to read each element.
func (s *jsonScan) array(elem func()) {
	if !s.expect('[') {
		return
	}
	if s.next() == ']' {
		s.i++
		return
	}
	for !s.bad {
		elem()
		if s.bad {
			return
		}
		switch s.next() {
		case ',':
			s.i++
		case ']':
			s.i++
			return
		default:
			s.bad = true
		}
	}
}

// raw reads a string and returns its bytes between the quotes, which it
// accepts only without escapes and control characters, in valid UTF-8:
// then they are the string's value, as encoding/json reads it.
func (s *jsonScan) raw() []byte {
	if s.bad || s.next() != '"' {
		s.bad = true
		return nil
	}
	start := s.i + 1
	ascii := true
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			v := s.b[start:j]
			if !ascii && !utf8.Valid(v) {
				s.bad = true
				return nil
			}
			s.i = j + 1
			return v
		case c == '\\' || c < 0x20:
			s.bad = true
			return nil
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	s.bad = true
	return nil
}

func (s *jsonScan) str() string { return string(s.raw()) }

func (s *jsonScan) strings() []string {
	out := []string{}
	s.array(func() { out = append(out, s.str()) })
	return out
}

// int64 reads an integer: JSON's grammar for one (no fraction, no
// exponent), in int64's range.
func (s *jsonScan) int64() int64 {
	if s.bad {
		return 0
	}
	s.next()
	b, j := s.b, s.i
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
	default:
		s.bad = true
		return 0
	}
	if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E' || b[j] >= '0' && b[j] <= '9') {
		s.bad = true
		return 0
	}
	n, err := strconv.ParseInt(string(b[s.i:j]), 10, 64)
	if err != nil {
		s.bad = true
		return 0
	}
	s.i = j
	return n
}

func (s *jsonScan) bool() bool {
	if s.bad {
		return false
	}
	s.next()
	for _, lit := range []string{"true", "false"} {
		if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
			s.i += len(lit)
			return lit == "true"
		}
	}
	s.bad = true
	return false
}

// time reads a time as time.Time's UnmarshalJSON does (RFC 3339).
func (s *jsonScan) time() time.Time {
	if s.bad || s.next() != '"' {
		s.bad = true
		return time.Time{}
	}
	start := s.i
	if s.raw(); s.bad {
		return time.Time{}
	}
	var t time.Time
	if err := t.UnmarshalJSON(s.b[start:s.i]); err != nil {
		s.bad = true
		return time.Time{}
	}
	return t
}
