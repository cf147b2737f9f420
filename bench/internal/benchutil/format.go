package benchutil

import "fmt"

// MiB writes a size in bytes as mebibytes with one decimal ("512.0 MiB"),
// the unit every benchmark report uses for memory and archives.
func MiB(bytes int64) string { return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20)) }

// Verdict is how a report says whether an issue's target was met. The
// miss is in capitals so that it stands out in a long report.
func Verdict(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}
