package fsm

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

// TestPlaceContainersEntriesDecodeAsTheirJSONDid checks that a
// PlaceContainers entry, now MessagePack, decodes to what the same command
// written as JSON decoded to, for random commands; and that other commands
// are still written as JSON.
func TestPlaceContainersEntriesDecodeAsTheirJSONDid(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		cmd := randomPlacement(r)
		entry, err := Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if !isMsgpackMap(entry[1:]) {
			t.Fatalf("command %d: PlaceContainers written as %q, want MessagePack", i, entry)
		}
		got, err := Decode(entry)
		if err != nil {
			t.Fatalf("command %d: decode: %v", i, err)
		}
		js, err := json.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		var want PlaceContainers
		if err := json.Unmarshal(js, &want); err != nil {
			t.Fatal(err)
		}
		if !samePlacement(got.(PlaceContainers), want) {
			t.Fatalf("command %d decoded as\n%#v\nits JSON as\n%#v", i, got, want)
		}
	}

	entry, err := Encode(SetDesired{ID: "c1", Desired: state.DesiredStopped, At: time.Unix(1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if entry[1] != '{' {
		t.Errorf("SetDesired written as %q, want JSON", entry)
	}
}

// TestCorruptPlaceContainersEntriesAreRefused flips, inserts and removes
// bytes of MessagePack entries: each decodes to some command or is
// refused with ErrBadCommand, never a panic.
func TestCorruptPlaceContainersEntriesAreRefused(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	refused := 0
	for range 2000 {
		entry, err := Encode(randomPlacement(r))
		if err != nil {
			t.Fatal(err)
		}
		payload := entry[1:]
		for range 1 + r.IntN(3) {
			if len(payload) < 2 {
				break
			}
			i := 1 + r.IntN(len(payload)-1) // keep the map header
			switch r.IntN(3) {
			case 0:
				payload[i] = byte(r.IntN(256))
			case 1:
				payload = append(payload[:i], append([]byte{byte(r.IntN(256))}, payload[i:]...)...)
			default:
				payload = append(payload[:i], payload[i+1:]...)
			}
		}
		if _, err := Decode(append([]byte{byte(TypePlaceContainers)}, payload...)); err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("corrupt entry refused with %v, want ErrBadCommand", err)
			}
			refused++
		}
	}
	if refused == 0 {
		t.Error("no corrupt entry was refused")
	}
}

// samePlacement reports whether a and b are the same command, their times
// the same instant.
func samePlacement(a, b PlaceContainers) bool {
	sameTime := a.At.Equal(b.At)
	a.At, b.At = time.Time{}, time.Time{}
	return sameTime && reflect.DeepEqual(a, b)
}

// randomPlacement returns a command with random fields: strings with
// characters JSON escapes or that are not ASCII, empty and nil slices and
// maps, negative numbers, times in any zone. The strings are valid UTF-8,
// as every string the API takes is (protobuf's strings are): of invalid
// UTF-8, JSON made U+FFFD where MessagePack keeps the bytes.
func randomPlacement(r *rand.Rand) PlaceContainers {
	runes := []rune("ab09-_./: \"\\<>&\u00e9\u2028\U0001F600\x00\x1f\x7f")
	str := func() string {
		var b strings.Builder
		for range r.IntN(6) {
			b.WriteRune(runes[r.IntN(len(runes))])
		}
		return b.String()
	}
	strs := func() []string {
		switch n := r.IntN(4); n {
		case 0:
			return nil
		case 1:
			return []string{}
		default:
			out := make([]string, n)
			for i := range out {
				out[i] = str()
			}
			return out
		}
	}
	num := func() int64 {
		switch r.IntN(3) {
		case 0:
			return 0
		case 1:
			return -r.Int64()
		}
		return r.Int64()
	}
	cmd := PlaceContainers{At: time.Unix(r.Int64N(1<<37), r.Int64N(1e9)).In(time.FixedZone("", 60*(r.IntN(1440)-720)))}
	for range r.IntN(4) {
		nc := NewContainer{ID: str(), Name: str(), Node: str(), Spec: state.ContainerSpec{
			Image: str(), Args: strs(), Env: strs(), WorkingDir: str(), Hostname: str(), User: str(),
			Request: state.Resources{MilliCPU: num(), MemoryBytes: num()}, Node: str(), Pinned: r.IntN(2) == 0,
		}}
		if r.IntN(2) == 0 {
			nc.Spec.Labels = map[string]string{}
			for range r.IntN(3) {
				nc.Spec.Labels[str()] = str()
			}
		}
		if r.IntN(2) == 0 {
			nc.Spec.Constraints = []state.Constraint{}
			for range r.IntN(3) {
				nc.Spec.Constraints = append(nc.Spec.Constraints, state.Constraint{Key: str(), Value: str()})
			}
		}
		cmd.Containers = append(cmd.Containers, nc)
	}
	return cmd
}
