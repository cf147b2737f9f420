package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// The chart's geometry, in SVG user units.
const (
	panelWidth  = 560
	panelHeight = 300
	marginLeft  = 56
	marginRight = 16
	marginTop   = 52
	// legendRow is the legend's baseline; legendSpacing the distance
	// between its entries.
	legendRow     = 36
	legendSpacing = 185
	marginBelow   = 48
	// yTicks is how many gridlines divide the imbalance axis.
	yTicks = 5
)

// Series colours: godwit, the baseline, and the target line.
const (
	colorGodwit   = "#1f77b4"
	colorBaseline = "#ff7f0e"
	colorTarget   = "#2ca02c"
)

// chart draws the imbalance over time of both policies, one panel per
// cluster size side by side, with the target and the phases marked: a
// hand-made SVG, so that the benchmark needs no plotting module.
func chart(o options, all [][]result) string {
	width := panelWidth * len(all)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, panelHeight, width, panelHeight)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, panelHeight)
	for i, rs := range all {
		panel(&b, o, rs, float64(i*panelWidth))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func panel(b *strings.Builder, o options, rs []result, x0 float64) {
	g, base := rs[0], rs[1]
	rounds := len(g.series)
	top := 0.0
	for _, r := range rs {
		for _, v := range r.series {
			top = math.Max(top, v)
		}
	}
	top = niceCeil(math.Max(top, g.target*2))
	left, right := x0+marginLeft, x0+panelWidth-marginRight
	y0, y1 := float64(panelHeight-marginBelow), float64(marginTop)
	x := func(round int) float64 { return left + (right-left)*float64(round)/float64(max(rounds-1, 1)) }
	y := func(v float64) float64 { return y0 - (y0-y1)*v/top }

	fmt.Fprintf(b, `<text x="%.1f" y="18" font-size="14" font-weight="bold">%s</text>`+"\n", left,
		html.EscapeString(fmt.Sprintf("%d nodes, %d containers: imbalance over time", g.nodes, g.containers)))
	for t := 0; t <= yTicks; t++ {
		v := top * float64(t) / yTicks
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), right, y(v))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%.2f</text>`+"\n", left-6, y(v)+4, v)
	}
	for p := 0; p <= o.phases; p++ {
		r := min(p*o.phaseRounds, rounds-1)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#bbb" stroke-dasharray="2,3"/>`+"\n", x(r), y0, x(r), y1)
		minutes := float64(p*o.phaseRounds) * o.interval.Minutes()
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.0f</text>`+"\n", x(r), y0+16, minutes)
	}
	phaseMinutes := float64(o.phaseRounds) * o.interval.Minutes()
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">minutes (dotted lines: hot spots move; nodes join at %.0f, a drain starts at %.0f)</text>`+"\n",
		(left+right)/2, y0+34, addPhase*phaseMinutes, drainPhase*phaseMinutes)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="6,4"/>`+"\n", left, y(g.target), right, y(g.target), colorTarget)
	polyline(b, base.series, x, y, colorBaseline)
	polyline(b, g.series, x, y, colorGodwit)
	legend := []struct{ color, name string }{
		{colorGodwit, fmt.Sprintf("godwit (%d migrations)", g.migrations)},
		{colorBaseline, fmt.Sprintf("LowNodeUtilization (%d)", base.migrations)},
		{colorTarget, fmt.Sprintf("target %.2f", g.target)},
	}
	// The legend is a row under the title, outside the plot, where no
	// line can cross it.
	for i, l := range legend {
		lx, ly := left+float64(i)*legendSpacing, float64(legendRow)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", lx, ly-4, lx+20, ly-4, l.color)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+26, ly, html.EscapeString(l.name))
	}
}

// polyline draws series as a line.
func polyline(b *strings.Builder, series []float64, x func(int) float64, y func(float64) float64, color string) {
	var pts []string
	for i, v := range series {
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
	}
	fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", color, strings.Join(pts, " "))
}

// niceCeil rounds v up to a round number: 1, 1.5, 2, 3, 4, 5, 6 or 8
// times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.5, 2, 3, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
