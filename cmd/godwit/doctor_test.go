package main

import (
	"bytes"
	"testing"

	"github.com/godwit/godwit/agent/doctor"
)

func TestWriteDoctorReport(t *testing.T) {
	report := doctor.Report{
		Checks: []doctor.Check{
			{Name: "root", Status: doctor.StatusPass, Required: true, Detail: "euid 0"},
			{Name: "criu", Status: doctor.StatusPass, Required: true, Detail: "4.2.1 (criu check: looks good)"},
			{Name: "btrfs", Status: doctor.StatusWarn, Detail: "btrfs not in /proc/filesystems", Fix: "modprobe btrfs"},
			{Name: "pipe-max-size", Status: doctor.StatusFail, Detail: "1048576 < 4194304", Fix: "sysctl -w fs.pipe-max-size=4194304"},
		},
		Strategies: []doctor.Strategy{
			{Name: doctor.StopCopy, Supported: true},
			{Name: doctor.Stream, Reason: "needs pipe-max-size: 1048576 < 4194304 (fix: sysctl -w fs.pipe-max-size=4194304)"},
		},
		OK: true,
	}
	want := `PASS  root           euid 0
PASS  criu           4.2.1 (criu check: looks good)
WARN  btrfs          btrfs not in /proc/filesystems  fix: modprobe btrfs
FAIL  pipe-max-size  1048576 < 4194304  fix: sysctl -w fs.pipe-max-size=4194304

Migration strategies:
yes  stop-copy
no   stream  needs pipe-max-size: 1048576 < 4194304 (fix: sysctl -w fs.pipe-max-size=4194304)
`
	var buf bytes.Buffer
	if err := writeDoctorReport(&buf, report); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != want {
		t.Errorf("doctor output:\n%s\nwant:\n%s", got, want)
	}
}
