// Package units formats and parses sizes the way operators read and type
// them: binary units (KiB, MiB, GiB), as docker and runc use.
package units

import (
	"fmt"
	"strconv"
	"strings"
)

// FormatBytes writes n with a binary unit: 512 B, 1.5 KiB, 64.0 MiB.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// sizeUnits lists suffixes longest first, so "mib" wins over "b".
var sizeUnits = []struct {
	suffix string
	factor int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"tb", 1 << 40},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"b", 1},
}

// ParseSize reads a size such as 512m, 1g, 64MiB or 1048576 (bytes).
func ParseSize(s string) (int64, error) {
	lower := strings.ToLower(strings.TrimSpace(s))
	factor := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(lower, u.suffix); ok {
			lower, factor = strings.TrimSpace(num), u.factor
			break
		}
	}
	n, err := strconv.ParseFloat(lower, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional unit, such as 512m or 1g", s)
	}
	return int64(n * float64(factor)), nil
}
