package snapshot

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseOptions(t *testing.T) {
	cases := []struct {
		name      string
		options   []string
		wantFlags uintptr
		wantData  string
	}{
		{"empty", nil, 0, ""},
		{"read-only bind", []string{"rbind", "ro"}, unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY, ""},
		{"later rw clears ro", []string{"ro", "rw"}, 0, ""},
		{"flags and data", []string{"nosuid", "lowerdir=/a:/b", "nodev", "upperdir=/u"}, unix.MS_NOSUID | unix.MS_NODEV, "lowerdir=/a:/b,upperdir=/u"},
		{"unknown words are data", []string{"index=off", "userxattr"}, 0, "index=off,userxattr"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			flags, data := parseOptions(tc.options)
			if flags != tc.wantFlags || data != tc.wantData {
				t.Errorf("parseOptions(%q) = %#x, %q; want %#x, %q", tc.options, flags, data, tc.wantFlags, tc.wantData)
			}
		})
	}
}

func TestKindText(t *testing.T) {
	for _, k := range []Kind{KindUnknown, KindActive, KindView, KindCommitted} {
		b, err := k.MarshalText()
		if err != nil {
			t.Fatalf("marshal %v: %v", k, err)
		}
		var back Kind
		if err := back.UnmarshalText(b); err != nil || back != k {
			t.Errorf("%v -> %q -> %v, %v", k, b, back, err)
		}
	}
	if _, err := Kind(42).MarshalText(); err == nil {
		t.Error("marshalled an undefined kind")
	}
	var k Kind
	if err := k.UnmarshalText([]byte("sideways")); err == nil {
		t.Error("unmarshalled an unknown kind name")
	}
}
