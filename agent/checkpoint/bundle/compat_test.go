package bundle

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestCheckCompatibility(t *testing.T) {
	haveAll := func(digest.Digest) bool { return true }
	haveOnly := func(ds ...digest.Digest) func(digest.Digest) bool {
		return func(d digest.Digest) bool {
			for _, h := range ds {
				if h == d {
					return true
				}
			}
			return false
		}
	}
	tests := []struct {
		name          string
		host          func(h *HostInfo)
		hasLayer      func(digest.Digest) bool
		wantLayers    []digest.Digest
		wantFlags     []string
		wantProblems  []string // fragments of the error, each must appear
		wantWarnings  []string // fragments, one per expected warning
		wantNoProblem bool
	}{
		{name: "same host", host: func(*HostInfo) {}, hasLayer: haveAll, wantNoProblem: true},
		{name: "newer CRIU and a CPU with more features", host: func(h *HostInfo) {
			h.CRIUVersion = "4.3"
			h.CPU.Flags = append(h.CPU.Flags, "avx512f")
		}, hasLayer: haveAll, wantNoProblem: true},
		{name: "missing layers", host: func(*HostInfo) {}, hasLayer: haveOnly(layerBase),
			wantLayers:   []digest.Digest{layerApp},
			wantProblems: []string{"1 of its 2 layers are missing", layerApp.String(), "import the image first"}},
		{name: "no layers at all", host: func(*HostInfo) {}, hasLayer: haveOnly(),
			wantLayers:   []digest.Digest{layerBase, layerApp},
			wantProblems: []string{layerBase.String() + ", " + layerApp.String()}},
		{name: "missing CPU flags", host: func(h *HostInfo) { h.CPU.Flags = []string{"fpu", "sse4_2"} }, hasLayer: haveAll,
			wantFlags:    []string{"avx", "avx2"},
			wantProblems: []string{"CPU lacks features", "avx avx2", "node-a"}},
		{name: "older CRIU", host: func(h *HostInfo) { h.CRIUVersion = "4.1" }, hasLayer: haveAll,
			wantProblems: []string{"CRIU 4.1.0 on this host is older than CRIU 4.2.1", "upgrade CRIU to 4.2.1 or newer"}},
		{name: "older CRIU patch level", host: func(h *HostInfo) { h.CRIUVersion = "4.2" }, hasLayer: haveAll,
			wantProblems: []string{"older than CRIU 4.2.1"}},
		{name: "no CRIU", host: func(h *HostInfo) { h.CRIUVersion = "" }, hasLayer: haveAll,
			wantProblems: []string{"CRIU version is unknown", "install CRIU 4.2.1 or newer"}},
		{name: "runc major differs", host: func(h *HostInfo) { h.RuncVersion = "2.0.0" }, hasLayer: haveAll,
			wantProblems: []string{"differ in major version", "install runc 1.x"}},
		{name: "runc minor differs", host: func(h *HostInfo) { h.RuncVersion = "1.2.5+ds1" }, hasLayer: haveAll,
			wantNoProblem: true, wantWarnings: []string{"runc differs: dumped with 1.3.6, this host has 1.2.5"}},
		{name: "kernel differs", host: func(h *HostInfo) { h.Kernel = "6.12.0" }, hasLayer: haveAll,
			wantNoProblem: true, wantWarnings: []string{"kernel differs: dumped on 6.18.44, this host runs 6.12.0"}},
		{name: "CPU model differs", host: func(h *HostInfo) { h.CPU.Vendor, h.CPU.Model = "AuthenticAMD", "EPYC" }, hasLayer: haveAll,
			wantNoProblem: true, wantWarnings: []string{`CPU differs: dumped on "Xeon"`}},
		{name: "everything at once", host: func(h *HostInfo) {
			h.CRIUVersion, h.Kernel, h.CPU.Flags = "4.0", "6.1.0", nil
		}, hasLayer: haveOnly(layerApp),
			wantLayers:   []digest.Digest{layerBase},
			wantFlags:    []string{"avx", "avx2", "fpu", "sse4_2"},
			wantProblems: []string{"import the image first", "upgrade CRIU", "avx avx2 fpu sse4_2"},
			wantWarnings: []string{"kernel differs"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := sampleManifest()
			host := sampleHost()
			host.Node = "node-b"
			tt.host(&host)
			warnings, err := CheckCompatibility(m, host, tt.hasLayer)

			if len(warnings) != len(tt.wantWarnings) {
				t.Errorf("warnings %q, want %d matching %q", warnings, len(tt.wantWarnings), tt.wantWarnings)
			}
			for i := range min(len(warnings), len(tt.wantWarnings)) {
				if !strings.Contains(warnings[i], tt.wantWarnings[i]) {
					t.Errorf("warning %q does not mention %q", warnings[i], tt.wantWarnings[i])
				}
			}
			if tt.wantNoProblem {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantRefused(t, err, ErrIncompatible, tt.wantProblems...)
			var ie *IncompatibleError
			if !errors.As(err, &ie) {
				t.Fatalf("error %T is not an *IncompatibleError", err)
			}
			if !reflect.DeepEqual(ie.MissingLayers, tt.wantLayers) {
				t.Errorf("MissingLayers %v, want %v", ie.MissingLayers, tt.wantLayers)
			}
			if !reflect.DeepEqual(ie.MissingCPUFlags, tt.wantFlags) {
				t.Errorf("MissingCPUFlags %v, want %v", ie.MissingCPUFlags, tt.wantFlags)
			}
		})
	}
}

func TestCheckCompatibilityWithoutRecordedCPU(t *testing.T) {
	m := sampleManifest()
	m.Host.CPU = CPU{}
	warnings, err := CheckCompatibility(m, sampleHost(), func(digest.Digest) bool { return true })
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "records no CPU features") {
		t.Errorf("warnings %q, want one saying the CPU was not checked", warnings)
	}
}

func TestParseCPUInfo(t *testing.T) {
	tests := []struct {
		name    string
		cpuinfo string
		want    CPU
		wantErr bool
	}{
		{"x86, first processor only", `processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model name	: Intel(R) Xeon(R) CPU @ 2.20GHz
flags		: fpu vme sse4_2 avx2 avx fpu

processor	: 1
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) CPU @ 2.20GHz
flags		: fpu vme sse4_2 avx2 avx avx512f
`, CPU{Vendor: "GenuineIntel", Model: "Intel(R) Xeon(R) CPU @ 2.20GHz", Flags: []string{"avx", "avx2", "fpu", "sse4_2", "vme"}}, false},
		{"arm64", `processor	: 0
BogoMIPS	: 50.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
CPU implementer	: 0x41
CPU architecture: 8
CPU part	: 0xd0c
`, CPU{Vendor: "0x41", Model: "0xd0c", Flags: []string{"aes", "asimd", "atomics", "crc32", "evtstrm", "fp", "pmull", "sha1", "sha2"}}, false},
		{"no flags", "processor	: 0\nvendor_id	: X\n", CPU{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCPUInfo(strings.NewReader(tt.cpuinfo))
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseCPUInfo error %v, want error %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseCPUInfo = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseCPUInfoOfThisHost(t *testing.T) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		t.Fatalf("no /proc/cpuinfo: %v", err)
	}
	defer f.Close()
	cpu, err := ParseCPUInfo(f)
	if err != nil {
		t.Fatalf("ParseCPUInfo(/proc/cpuinfo): %v", err)
	}
	if len(cpu.Flags) == 0 || cpu.Vendor == "" {
		t.Errorf("this host's CPU parsed as %+v, want a vendor and flags", cpu)
	}
}
