// Package bench measures Loom against baselines built in the same run on
// the same machine: rounds alternate between Loom and each baseline so
// drift hits both, and results are reported as min, median and max.
package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Figure is one measured quantity over rounds.
type Figure struct {
	Name   string    `json:"name"`
	Unit   string    `json:"unit"`
	Values []float64 `json:"values"`
	Min    float64   `json:"min"`
	Median float64   `json:"median"`
	Max    float64   `json:"max"`
	// Baseline is the figure this one is compared with, if any.
	Baseline string `json:"baseline,omitempty"`
	// Ratio is median / baseline median (for "higher is better" units) or
	// baseline / median (for "lower is better" units), so > 1 is better.
	Ratio  float64 `json:"ratio,omitempty"`
	Target string  `json:"target,omitempty"`
}

// Report collects figures.
type Report struct {
	Machine string    `json:"machine"`
	Kernel  string    `json:"kernel"`
	Date    time.Time `json:"date"`
	Mode    string    `json:"mode"`
	// Rounds is how many alternating rounds the sections that alternate ran.
	Rounds int `json:"rounds"`
	// Seconds is the run's wall time, set by Write: bench-short promises
	// a bound on it.
	Seconds float64   `json:"seconds"`
	Figures []*Figure `json:"figures"`
	Notes   []string  `json:"notes,omitempty"`
	byName  map[string]*Figure
}

// NewReport starts a report describing this machine.
func NewReport(mode string, rounds int) *Report {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				_, cpu, _ = strings.Cut(l, ": ")
				break
			}
		}
	}
	return &Report{Machine: fmt.Sprintf("%s, %d cores", cpu, runtime.NumCPU()), Kernel: strings.TrimSpace(string(kernel)),
		Date: time.Now().UTC().Truncate(time.Second), Mode: mode, Rounds: rounds, byName: map[string]*Figure{}}
}

// Add records one round's value of a figure.
func (r *Report) Add(name, unit string, v float64) {
	f, ok := r.byName[name]
	if !ok {
		f = &Figure{Name: name, Unit: unit}
		r.byName[name] = f
		r.Figures = append(r.Figures, f)
	}
	f.Values = append(f.Values, v)
}

// Compare marks name as measured against baseline, with a target to meet.
// A figure compared with a second baseline gets a row of its own for it,
// "name, against baseline", with the same values.
func (r *Report) Compare(name, baseline, target string) {
	f, ok := r.byName[name]
	if !ok {
		return
	}
	if f.Baseline != "" && f.Baseline != baseline {
		again := &Figure{Name: name + ", against " + baseline, Unit: f.Unit, Values: f.Values}
		r.byName[again.Name] = again
		r.Figures = append(r.Figures, again)
		f = again
	}
	f.Baseline, f.Target = baseline, target
}

// Note adds a line to the report.
func (r *Report) Note(format string, a ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, a...)) }

func lowerIsBetter(unit string) bool {
	return unit == "µs" || unit == "ms" || unit == "s" || unit == "MiB" || unit == "%" || unit == "writes"
}

func (r *Report) finish() {
	for _, f := range r.Figures {
		v := append([]float64(nil), f.Values...)
		sort.Float64s(v)
		f.Min, f.Max, f.Median = v[0], v[len(v)-1], v[len(v)/2]
		if len(v)%2 == 0 {
			f.Median = (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
	}
	for _, f := range r.Figures {
		if b, ok := r.byName[f.Baseline]; ok && b.Median > 0 && f.Median > 0 {
			f.Ratio = f.Median / b.Median
			if lowerIsBetter(f.Unit) {
				f.Ratio = b.Median / f.Median
			}
		}
	}
}

// Write stores results.json and results.md in dir and prints the table.
func (r *Report) Write(dir string) error {
	r.Seconds = time.Since(r.Date).Round(time.Second).Seconds()
	r.finish()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	// A run's figures must not be lost for want of a directory.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "# Loom benchmark results\n\n- machine: %s\n- kernel: %s\n- date: %s\n- mode: %s, %d rounds, %s in all\n\n", r.Machine, r.Kernel, r.Date.Format(time.RFC3339), r.Mode, r.Rounds, time.Duration(r.Seconds)*time.Second)
	md.WriteString("| figure | unit | min | median | max | baseline | ratio (>1 = Loom better) | target |\n|---|---|---|---|---|---|---|---|\n")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tUNIT\tMIN\tMEDIAN\tMAX\tBASELINE\tRATIO\tTARGET")
	for _, f := range r.Figures {
		ratio := ""
		if f.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", f.Ratio)
		}
		fmt.Fprintf(&md, "| %s | %s | %.4g | %.4g | %.4g | %s | %s | %s |\n", f.Name, f.Unit, f.Min, f.Median, f.Max, f.Baseline, ratio, f.Target)
		fmt.Fprintf(tw, "%s\t%s\t%.4g\t%.4g\t%.4g\t%s\t%s\t%s\n", f.Name, f.Unit, f.Min, f.Median, f.Max, f.Baseline, ratio, f.Target)
	}
	tw.Flush()
	if len(r.Notes) > 0 {
		md.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&md, "- %s\n", n)
			fmt.Println("note:", n)
		}
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644)
}
