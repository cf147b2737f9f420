package placement

import (
	"strconv"
	"strings"
)

// Binary units, as operators read memory sizes.
const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
	tib = 1 << 40
)

// formatBytes writes a byte count in binary units with at most one
// decimal: "512 MiB", "1.5 GiB".
func formatBytes(b int64) string {
	abs := max(b, -b)
	switch {
	case abs >= tib:
		return decimal(float64(b)/tib, 1) + " TiB"
	case abs >= gib:
		return decimal(float64(b)/gib, 1) + " GiB"
	case abs >= mib:
		return decimal(float64(b)/mib, 1) + " MiB"
	case abs >= kib:
		return decimal(float64(b)/kib, 1) + " KiB"
	}
	return strconv.FormatInt(b, 10) + " B"
}

// formatCPU writes thousandths of a CPU as CPUs: "0.5 CPU", "4 CPUs".
func formatCPU(milli int64) string {
	s := decimal(float64(milli)/1000, 3)
	if max(milli, -milli) <= 1000 {
		return s + " CPU"
	}
	return s + " CPUs"
}

// decimal formats f with at most digits decimals and no trailing zeros.
func decimal(f float64, digits int) string {
	s := strconv.FormatFloat(f, 'f', digits, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
