package main

import (
	"bufio"
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tproxy/tproxy/host"
)

const reportUsage = `usage: tproxy report [-o FILE] DIR

Writes the session directory DIR as one self-contained HTML file (no
network, no external assets): a timeline of the phases and steps, the
failure highlighted, the events filterable by step and name, the metrics
charted over time per step, and the artifacts with sizes and SHA-256.

A large session stays usable: up to ` + "100" + ` events of each kind (step and
name) and ` + "300" + ` points of each metric are embedded, evenly spread
over the run, with the full counts shown; metrics are aggregated exactly.

Exit status: 0 when the report was written, 1 when the session could not
be read or the file not written, 2 for a usage error.

Flags:
`

//go:embed report.html.tmpl
var reportHTML string

// reportTmpl is parsed once; a broken template fails at start-up, and the
// tests, rather than on a user's session.
var reportTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"bytes": fmtBytes,
	"value": fmtValue,
	"pct":   func(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) },
}).Parse(reportHTML))

// reportCmd is "tproxy report".
func reportCmd(_ context.Context, args []string, e *env) int {
	fs := flagSet("report", reportUsage, e)
	out := fs.String("o", "report.html", "the HTML `file` to write; - for stdout")
	pos, _, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(fs, e, "want one session directory, got %d arguments", len(pos))
	}
	s, err := readSession(pos[0])
	if err != nil {
		fmt.Fprintf(e.stderr, "tproxy report: %v\n", err)
		return exitFail
	}
	if err := writeReportFile(*out, e.stdout, s); err != nil {
		fmt.Fprintf(e.stderr, "tproxy report: %v\n", err)
		return exitFail
	}
	if *out != "-" {
		fmt.Fprintf(e.stdout, "wrote %s (%d events, %d metrics)\n", *out, s.events, s.metrics)
	}
	return exitOK
}

// writeReportFile writes the report to path, atomically so that a reader
// never sees half a report, or to stdout for "-".
func writeReportFile(path string, stdout io.Writer, s *session) error {
	if path == "-" {
		return writeReport(stdout, s)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".report-*.html")
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 256<<10)
	err = writeReport(bw, s)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// writeReport renders the session as HTML.
func writeReport(w io.Writer, s *session) error {
	return reportTmpl.Execute(w, buildReport(s))
}

// The report's view model: everything positioned and formatted here, so
// that the template only lays it out, and the page needs script only to
// filter the events.
type (
	reportView struct {
		Title      string
		Session    string
		Dir        string
		Outcome    string
		OK         bool
		Started    string
		Duration   string
		Worker     string
		Failure    *host.Failure
		StderrTail string
		Summary    []string // short facts under the title

		Ticks  []tick
		Phases []bar
		Steps  []bar

		Events      []eventView
		EventKinds  []kindView
		StepNames   []string
		EventNames  []string
		TotalEvents int64
		ShownEvents int
		OtherEvents int64

		Charts      []chart
		OtherPoints int64

		Artifacts []artifactView
	}
	tick struct {
		Left  float64 // percent of the run
		Label string
	}
	bar struct {
		Label, Detail string
		Class         string // phase, or the step's state
		Left, Width   float64
		Step          string
		Title         string
	}
	eventView struct {
		Seq      int64
		Offset   string
		Step     string
		Name     string
		Source   string
		Data     string
		Failed   bool
		Lifetime bool // a lifecycle event: shown bold
	}
	kindView struct {
		Step, Name   string
		Count, Shown int64
	}
	chart struct {
		Step, Name, Unit string
		Count            int64
		Shown            int64
		Sum, Min, Max    float64
		Last             float64
		Path             string // SVG polyline points, in a 600x120 box
		Dots             []dot  // the points themselves, when few
		YMin, YMax       string
		Invalid          int64
	}
	dot          struct{ X, Y string }
	artifactView struct {
		Step, Path, SHA256 string
		Size               int64
	}
)

// Chart geometry, in SVG user units.
const chartW, chartH = 600.0, 120.0

func buildReport(s *session) *reportView {
	st := &s.status
	v := &reportView{
		Session:  st.SessionID,
		Dir:      s.dir,
		Outcome:  st.Outcome,
		OK:       st.Outcome == host.OutcomeSuccess,
		Started:  st.StartedAt.UTC().Format(time.RFC3339),
		Duration: fmtMS(st.DurationMS),
		Failure:  st.Failure, StderrTail: st.StderrTail,
		TotalEvents: s.events, OtherEvents: s.otherEvents, OtherPoints: s.otherPoints,
	}
	v.Title = "tproxy session " + cmp.Or(st.SessionID, filepath.Base(s.dir))
	if st.Worker != nil {
		v.Worker = st.Worker.Name + " " + st.Worker.Version
	}
	v.Summary = []string{
		fmt.Sprintf("%d/%d steps", st.StepsCompleted, st.StepsTotal),
		fmt.Sprintf("%d events", s.events),
		fmt.Sprintf("%d metrics", s.metrics),
		fmt.Sprintf("%d artifacts (%s)", st.Artifacts.Files, fmtBytes(st.Artifacts.Bytes)),
	}

	// The timeline spans the run: run_start (or status.json's start) to
	// the last record (or status.json's end).
	t0, t1 := s.runStart, s.runEnd
	if t0.IsZero() || !t1.After(t0) {
		t1 = t0.Add(time.Millisecond)
	}
	total := t1.Sub(t0)
	pos := func(t time.Time) float64 {
		return math.Max(0, math.Min(100, 100*float64(t.Sub(t0))/float64(total)))
	}
	for i := 0; i <= 4; i++ {
		v.Ticks = append(v.Ticks, tick{Left: float64(i) * 25, Label: fmtDuration(total * time.Duration(i) / 4)})
	}
	for _, p := range phaseSpans(s) {
		l, r := pos(p.start), pos(p.end)
		v.Phases = append(v.Phases, bar{Label: p.name, Class: "phase", Left: l, Width: r - l,
			Detail: fmtDuration(p.end.Sub(p.start)), Title: fmt.Sprintf("%s: %s", p.name, fmtDuration(p.end.Sub(p.start)))}.atEnd())
	}
	// One bar per step of status.json, in its order: a step that did not
	// run gets an empty bar where the run stopped, so the timeline always
	// accounts for every step.
	for _, step := range st.Steps {
		b := bar{Label: step.ID, Class: "step " + cssClass(step.Status), Step: step.ID}
		tm := s.steps[step.ID]
		switch {
		case tm != nil && !tm.start.IsZero():
			end := tm.end
			if end.IsZero() {
				end = t1
			}
			b.Left = pos(tm.start)
			b.Width = pos(end) - b.Left
			b.Detail = fmt.Sprintf("%s · %s", step.Status, fmtDuration(end.Sub(tm.start)))
		default:
			b.Left = 100
			b.Detail = step.Status
		}
		if step.RowsProcessed > 0 {
			b.Detail += fmt.Sprintf(" · %d rows", step.RowsProcessed)
		}
		b.Title = step.ID + " (" + step.Driver + "): " + b.Detail
		if msg := s.stepError(step.ID); msg != "" {
			b.Title += "\n" + step.ErrorType + ": " + msg
		}
		v.Steps = append(v.Steps, b.atEnd())
		for _, a := range step.Artifacts {
			v.Artifacts = append(v.Artifacts, artifactView{Step: step.ID, Path: a.Path, Size: a.Size, SHA256: a.SHA256})
		}
	}

	// Events: the samples of every kind, merged back into sequence order.
	var rows []eventRow
	steps, names := map[string]bool{}, map[string]bool{}
	for _, k := range s.eventKinds {
		v.EventKinds = append(v.EventKinds, kindView{Step: k.step, Name: k.name, Count: k.count, Shown: int64(len(k.sample.items))})
		rows = append(rows, k.sample.items...)
		steps[k.step], names[k.name] = true, true
	}
	slices.SortFunc(rows, func(a, b eventRow) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, r := range rows {
		v.Events = append(v.Events, eventView{Seq: r.Seq, Offset: "+" + fmtDuration(r.TS.Sub(t0)), Step: r.Step, Name: r.Name,
			Source: r.Source, Data: string(r.Data), Failed: r.Name == "step_failed" || r.Name == "run_failed",
			Lifetime: lifecycle[r.Name]})
	}
	v.ShownEvents = len(rows)
	delete(steps, "")
	v.StepNames = slices.Sorted(maps.Keys(steps))
	v.EventNames = slices.Sorted(maps.Keys(names))

	for _, m := range sortedSeries(s) {
		c := chart{Step: cmp.Or(m.step, "(session)"), Name: m.name, Unit: m.unit, Count: m.count, Shown: int64(len(m.sample.items)),
			Sum: m.sum, Min: m.min, Max: m.max, Last: m.last, Invalid: m.invalid}
		if m.count > 0 {
			lo, hi := m.min, m.max
			if hi == lo {
				lo, hi = lo-1, hi+1
			}
			c.YMin, c.YMax = fmtValue(m.min), fmtValue(m.max)
			var b strings.Builder
			for i, p := range m.sample.items {
				if i > 0 {
					b.WriteByte(' ')
				}
				x := strconv.FormatFloat(chartW*pos(p.T)/100, 'f', 1, 64)
				y := strconv.FormatFloat(chartH-chartH*(p.V-lo)/(hi-lo), 'f', 1, 64)
				b.WriteString(x + "," + y)
				if len(m.sample.items) <= 30 {
					// A few points: show each, a line alone would hide them.
					c.Dots = append(c.Dots, dot{x, y})
				}
			}
			c.Path = b.String()
		}
		v.Charts = append(v.Charts, c)
	}
	return v
}

// atEnd moves the detail of a bar that ends near the right edge, where
// there is no room after it: to the bar's left, or into a long bar.
func (b bar) atEnd() bar {
	switch {
	case b.Left+b.Width <= 75:
	case b.Left >= 25:
		b.Class += " end"
	default:
		b.Class += " inside"
	}
	return b
}

// phaseSpans are the run's phases: from status.json's durations once the
// run has ended (the host times every phase, while a phase_complete event
// is only written for a phase that completed), else from the events so far.
func phaseSpans(s *session) []span {
	st := &s.status
	p := st.Phases
	if st.Outcome == host.OutcomeRunning || st.StartedAt.IsZero() || p.PrepareMS+p.ExecuteMS+p.CollectMS == 0 {
		return s.phases
	}
	ms := func(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
	prepEnd := st.StartedAt.Add(ms(p.PrepareMS))
	execEnd := prepEnd.Add(ms(p.ExecuteMS))
	out := []span{{"prepare", st.StartedAt, prepEnd}}
	if p.ExecuteMS > 0 {
		out = append(out, span{"execute", prepEnd, execEnd})
	}
	// Collect ends the run; anchoring it at FinishedAt keeps it there
	// whatever milliseconds the rounding lost.
	collectEnd := cmp.Or(st.FinishedAt, execEnd.Add(ms(p.CollectMS)))
	return append(out, span{"collect", collectEnd.Add(-ms(p.CollectMS)), collectEnd})
}

// lifecycle are the events the runtime and the host send about the run
// itself, set apart from a driver's own.
var lifecycle = map[string]bool{
	"run_start": true, "session_initialized": true, "phase_complete": true, "step_start": true,
	"step_complete": true, "step_failed": true, "step_skipped": true, "session_cleanup": true,
	"run_complete": true, "run_failed": true, "artifact_skipped": true, "artifact_refused": true,
	"protocol_warning": true,
}

// cssClass keeps a state usable as a class name whatever a future
// status.json calls it.
func cssClass(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, strings.ToLower(s))
}
