package fsm

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

// fullPlacement sets every field a PlaceContainers entry carries.
func fullPlacement() PlaceContainers {
	return PlaceContainers{
		Containers: []NewContainer{{
			ID: "0123456789abcdef", Name: "web-1", Node: "n1",
			Spec: state.ContainerSpec{
				Image: "registry.example:5000/web:1.2", Args: []string{"serve", "--port=80"}, Env: []string{"A=1", "B=é"},
				WorkingDir: "/srv", Hostname: "web", User: "1000:1000", Labels: map[string]string{"team": "web", "tier": "front"},
				Request:     state.Resources{MilliCPU: 250, MemoryBytes: 64 << 20},
				Constraints: []state.Constraint{{Key: "zone", Value: "a"}, {Key: "disk", Value: "ssd"}},
				Node:        "n1", Pinned: true,
			},
		}, {ID: "fedcba9876543210", Name: "db", Node: "n2", Spec: state.ContainerSpec{Image: "postgres"}}},
		At: time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.FixedZone("", 3600)),
	}
}

// zeroFields lists the fields of v (a struct, walked into its structs
// and the first element of its slices) that hold their zero value.
func zeroFields(v reflect.Value, path string) []string {
	var out []string
	for i := range v.NumField() {
		f, name := v.Field(i), path+"."+v.Type().Field(i).Name
		switch {
		case f.IsZero():
			out = append(out, name)
		case f.Kind() == reflect.Struct && f.Type() != reflect.TypeFor[time.Time]():
			out = append(out, zeroFields(f, name)...)
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
			out = append(out, zeroFields(f.Index(0), name+"[0]")...)
		}
	}
	return out
}

// slowDecode is what every PlaceContainers entry decoded with before the
// fast decoder.
func slowDecode(payload []byte) (PlaceContainers, error) {
	var c PlaceContainers
	err := json.Unmarshal(payload, &c)
	return c, err
}

// samePlacement reports whether a and b are the same command. Their
// times are compared as instants with the same offset: two decodings of
// one offset make two time.Locations.
func samePlacement(a, b PlaceContainers) bool {
	sameTime := a.At.Equal(b.At) && a.At.Format(time.RFC3339Nano) == b.At.Format(time.RFC3339Nano)
	a.At, b.At = time.Time{}, time.Time{}
	return sameTime && reflect.DeepEqual(a, b)
}

// checkSameDecode fails t unless payload decodes through
// decodePlaceContainers exactly as through encoding/json: the same
// command, or an error for both. It returns whether the fast decoder
// took it.
func checkSameDecode(t *testing.T, payload []byte) bool {
	t.Helper()
	want, wantErr := slowDecode(payload)
	fast, fastOK := fastPlaceContainers(payload)
	if fastOK && (wantErr != nil || !samePlacement(fast, want)) {
		t.Fatalf("fast decoder read %q as %#v; encoding/json: %#v, %v", payload, fast, want, wantErr)
	}
	got, err := decodePlaceContainers(payload)
	switch {
	case (err != nil) != (wantErr != nil):
		t.Fatalf("decode %q: error %v; encoding/json's: %v", payload, err, wantErr)
	case err == nil && !samePlacement(got.(PlaceContainers), want):
		t.Fatalf("decode %q = %#v; encoding/json: %#v", payload, got, want)
	}
	return fastOK
}

// TestPlaceContainersFastDecoder checks that PlaceContainers entries
// decode as encoding/json decodes them, and that the fast decoder reads
// what Encode writes.
func TestPlaceContainersFastDecoder(t *testing.T) {
	t.Run("reads every field Encode writes", func(t *testing.T) {
		cmd := fullPlacement()
		if zero := zeroFields(reflect.ValueOf(cmd.Containers[0]), "NewContainer"); len(zero) > 0 {
			t.Fatalf("fullPlacement leaves %v unset: set them, and teach the fast decoder any new one", zero)
		}
		data, err := Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := fastPlaceContainers(data[1:])
		if !ok {
			t.Fatalf("the fast decoder gave up on Encode's %s", data[1:])
		}
		if !samePlacement(got, cmd) {
			t.Errorf("decoded %#v, want %#v", got, cmd)
		}
		checkSameDecode(t, data[1:])
	})

	const spec = `"spec":{"image":"busybox","request":{"milli_cpu":10,"memory_bytes":0}}`
	tests := []struct {
		name    string
		payload string
		// fast: the fast decoder takes it (else encoding/json decodes it).
		fast bool
	}{
		{name: "as Encode writes it", payload: `{"containers":[{"id":"a","name":"web","` + spec[1:] + `,"node":"n1"}],"at":"2025-03-01T12:00:00Z"}`, fast: true},
		{name: "whitespace and another order", payload: " {\n\t\"at\" : \"2025-03-01T12:00:00+01:00\" ,\r\"containers\":[ {\"node\":\"n1\"," + spec + ",\"name\":\"web\",\"id\":\"a\"} ] } \n", fast: true},
		{name: "empty arrays and objects", payload: `{"containers":[{"id":"a","spec":{"args":[],"env":[],"labels":{},"constraints":[]}}],"at":"2025-03-01T12:00:00Z"}`, fast: true},
		{name: "no containers", payload: `{"containers":[]}`, fast: true},
		{name: "empty object", payload: `{}`, fast: true},
		{name: "negative and zero numbers", payload: `{"containers":[{"spec":{"request":{"milli_cpu":-0,"memory_bytes":-42}}}]}`, fast: true},
		{name: "largest int64", payload: `{"containers":[{"spec":{"request":{"milli_cpu":9223372036854775807}}}]}`, fast: true},
		{name: "UTF-8 and a DEL", payload: "{\"containers\":[{\"name\":\"caf\u00e9-\u2028-\x7f\"}]}", fast: true},
		{name: "pinned false", payload: `{"containers":[{"spec":{"pinned":false}}]}`, fast: true},

		{name: "escaped string", payload: `{"containers":[{"name":"web\u003c1\u003e\"\\\/\n"}]}`},
		{name: "invalid UTF-8", payload: "{\"containers\":[{\"name\":\"a\xffb\"}]}"},
		{name: "control character", payload: "{\"containers\":[{\"name\":\"a\x01b\"}]}"},
		{name: "null", payload: `{"containers":null}`},
		{name: "null container", payload: `{"containers":[null]}`},
		{name: "null string", payload: `{"containers":[{"name":null}]}`},
		{name: "top-level null", payload: `null`},
		{name: "name in another case", payload: `{"Containers":[{"ID":"a"}]}`},
		{name: "unknown name", payload: `{"containers":[{"id":"a","color":"red"}]}`},
		{name: "repeated name", payload: `{"containers":[{"id":"a","id":"b"}]}`},
		{name: "repeated spec", payload: `{"containers":[{"spec":{"image":"a"},"spec":{"args":["x"]}}]}`},
		{name: "repeated label", payload: `{"containers":[{"spec":{"labels":{"k":"a","k":"b"}}}]}`},
		{name: "fraction", payload: `{"containers":[{"spec":{"request":{"milli_cpu":1.5}}}]}`},
		{name: "exponent", payload: `{"containers":[{"spec":{"request":{"milli_cpu":1e3}}}]}`},
		{name: "leading zero", payload: `{"containers":[{"spec":{"request":{"milli_cpu":01}}}]}`},
		{name: "plus sign", payload: `{"containers":[{"spec":{"request":{"milli_cpu":+1}}}]}`},
		{name: "overflow", payload: `{"containers":[{"spec":{"request":{"milli_cpu":9223372036854775808}}}]}`},
		{name: "string for a number", payload: `{"containers":[{"spec":{"request":{"milli_cpu":"1"}}}]}`},
		{name: "number for a string", payload: `{"containers":[{"id":1}]}`},
		{name: "bad time", payload: `{"at":"yesterday"}`},
		{name: "time not a string", payload: `{"at":12}`},
		{name: "truncated", payload: `{"containers":[{"id":"a"`},
		{name: "trailing comma", payload: `{"containers":[{"id":"a",}]}`},
		{name: "trailing data", payload: `{"containers":[]} {}`},
		{name: "bare word", payload: `{"containers":[{"spec":{"pinned":truex}}]}`},
		{name: "empty", payload: ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fast := checkSameDecode(t, []byte(tt.payload)); fast != tt.fast {
				t.Errorf("fast decoder took it: %v, want %v", fast, tt.fast)
			}
		})
	}

	t.Run("random commands and corruptions", func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for range 2000 {
			data, err := Encode(randomPlacement(r))
			if err != nil {
				t.Fatal(err)
			}
			payload := data[1:]
			checkSameDecode(t, payload)
			checkSameDecode(t, corrupt(r, payload))
		}
	})
}

// FuzzPlaceContainersDecoder looks for a payload that the two decoders
// read differently.
func FuzzPlaceContainersDecoder(f *testing.F) {
	for _, cmd := range []PlaceContainers{fullPlacement(), {}} {
		data, err := Encode(cmd)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data[1:])
	}
	f.Fuzz(func(t *testing.T, payload []byte) { checkSameDecode(t, payload) })
}

// randomPlacement returns a command with random fields, strings drawn
// from characters JSON escapes or that are not ASCII, and empty and nil
// slices and maps.
func randomPlacement(r *rand.Rand) PlaceContainers {
	const chars = "ab09-_./: \"\\<>&\u00e9\u2028\U0001F600\x00\x1f\x7f"
	runes := []rune(chars)
	str := func() string {
		var b strings.Builder
		for range r.IntN(6) {
			if r.IntN(20) == 0 {
				b.WriteByte(0xff) // invalid UTF-8
				continue
			}
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
	if r.IntN(10) > 0 {
		cmd.Containers = []NewContainer{}
	}
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

// corrupt returns payload with a few bytes changed, inserted or removed.
func corrupt(r *rand.Rand, payload []byte) []byte {
	out := []byte(string(payload))
	const bytes = "{}[]:,\"\\ 0123456789.-eEtrufalsn\x00\xff"
	for range 1 + r.IntN(3) {
		if len(out) == 0 {
			break
		}
		i := r.IntN(len(out))
		switch r.IntN(3) {
		case 0:
			out[i] = bytes[r.IntN(len(bytes))]
		case 1:
			out = append(out[:i], append([]byte{bytes[r.IntN(len(bytes))]}, out[i:]...)...)
		default:
			out = append(out[:i], out[i+1:]...)
		}
	}
	return out
}
