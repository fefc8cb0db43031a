package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
)

const showUsage = `usage: tproxy show [-f] DIR

Summarizes the session directory DIR: the outcome, the steps with their
state, duration, rows and error, the failure with the worker's stderr
tail, the metrics aggregated per step and, when the session has log
records (logs.jsonl), their count per level and the last 20 WARN and
ERROR records, each with its time from the session's start.

With -f it follows a session that is still running, as tail -f does: it
prints the last events, then each new event as it is written, and the
summary once the run has ended. A directory that does not exist yet is
waited for.

Exit status: 0 when the session was read (whatever its outcome), 1 when it
could not be (or -f was interrupted), 2 for a usage error.

Flags:
`

// pollEvery is how often show -f looks at the session's files. A session
// directory is plain files with no change notification that works
// everywhere (and over NFS), so it is polled, as tail -f does.
var pollEvery = 250 * time.Millisecond

// tailEvents is how many existing events show -f prints before following.
const tailEvents = 10

// showCmd is "tproxy show".
func showCmd(ctx context.Context, args []string, e *env) int {
	fs := flagSet("show", showUsage, e)
	follow := fs.Bool("f", false, "follow a running session until it ends")
	pos, _, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return usageError(fs, e, "want one session directory, got %d arguments", len(pos))
	}
	dir := pos[0]
	if *follow {
		if err := followSession(ctx, dir, e.stdout); err != nil {
			fmt.Fprintf(e.stderr, "tproxy show: %v\n", err)
			return exitFail
		}
	}
	s, err := readSession(dir)
	if err != nil {
		fmt.Fprintf(e.stderr, "tproxy show: %v\n", err)
		return exitFail
	}
	if *follow {
		fmt.Fprintln(e.stdout)
	}
	writeSummary(e.stdout, s)
	return exitOK
}

// writeSummary writes the terminal summary of a session.
func writeSummary(w io.Writer, s *session) {
	st := &s.status
	fmt.Fprintf(w, "session   %s\n", st.SessionID)
	outcome := fmt.Sprintf("%s: %d/%d steps", st.Outcome, st.StepsCompleted, st.StepsTotal)
	if st.Outcome != host.OutcomeRunning {
		outcome += fmt.Sprintf(" in %s (prepare %s, execute %s, collect %s)",
			fmtMS(st.DurationMS), fmtMS(st.Phases.PrepareMS), fmtMS(st.Phases.ExecuteMS), fmtMS(st.Phases.CollectMS))
	}
	fmt.Fprintf(w, "outcome   %s\n", outcome)
	if st.Worker != nil {
		worker := st.Worker.Name + " " + st.Worker.Version
		if st.Exit != nil {
			worker += ", " + exitString(st)
		}
		fmt.Fprintf(w, "worker    %s\n", worker)
	}
	fmt.Fprintf(w, "records   %d events, %d metrics; %d artifacts, %s", s.events, s.metrics, st.Artifacts.Files, fmtBytes(st.Artifacts.Bytes))
	if st.Artifacts.Skipped > 0 {
		fmt.Fprintf(w, " (%d skipped)", st.Artifacts.Skipped)
	}
	fmt.Fprintln(w)
	if p := st.Protocol; p.DroppedNotifications > 0 || p.SkippedLines > 0 {
		fmt.Fprintf(w, "protocol  %d notifications dropped, %d lines skipped\n", p.DroppedNotifications, p.SkippedLines)
	}
	if line := logCounts(s); line != "" {
		fmt.Fprintf(w, "logs      %s\n", line)
	}

	if f := st.Failure; f != nil {
		fmt.Fprintf(w, "\nFAILURE   %s", f.Kind)
		if f.StepID != "" {
			fmt.Fprintf(w, " at step %q", f.StepID)
		}
		if f.ErrorType != "" {
			fmt.Fprintf(w, " (%s)", f.ErrorType)
		}
		fmt.Fprintf(w, "\n%s\n", indent(f.Reason, "  "))
		if st.StderrTail != "" {
			fmt.Fprintf(w, "  the worker's stderr ended with:\n%s\n", indent(st.StderrTail, "  | "))
		}
	}

	if len(st.Steps) > 0 {
		fmt.Fprintln(w)
		t := table{right: []bool{false, false, true, true, false}}
		t.row("STEP", "STATE", "DURATION", "ROWS", "ERROR")
		for _, step := range st.Steps {
			dur := "-"
			if step.Status == host.StepComplete || step.Status == host.StepFailed {
				dur = fmtDuration(time.Duration(step.DurationMS * float64(time.Millisecond)))
			}
			errText := s.stepError(step.ID)
			if step.ErrorType != "" && errText != "" {
				errText = step.ErrorType + ": " + errText
			} else if step.ErrorType != "" {
				errText = step.ErrorType
			}
			t.row(step.ID, step.Status, dur, strconv.FormatInt(step.RowsProcessed, 10), oneLine(errText, 100))
		}
		t.write(w)
	}

	if s.logs != nil && len(s.logs.alerts) > 0 {
		fmt.Fprintln(w)
		writeLogAlerts(w, s)
	}

	if len(s.series) > 0 {
		fmt.Fprintln(w)
		t := table{right: []bool{false, false, true, true, true, true, true, false}}
		t.row("STEP", "METRIC", "COUNT", "SUM", "MIN", "MAX", "LAST", "UNIT")
		for _, m := range sortedSeries(s) {
			step := cmp.Or(m.step, "(session)")
			if m.count == 0 {
				t.row(step, m.name, "0", "-", "-", "-", "-", m.unit)
				continue
			}
			t.row(step, m.name, strconv.FormatInt(m.count, 10),
				fmtValue(m.sum), fmtValue(m.min), fmtValue(m.max), fmtValue(m.last), m.unit)
		}
		t.write(w)
		if s.otherPoints > 0 {
			fmt.Fprintf(w, "(and %d values of further metrics, not aggregated)\n", s.otherPoints)
		}
	}
}

// logCounts is the logs line of the summary: the log records per level,
// highest first, and those dropped at the cap of logs.jsonl; "" when
// there are none (a session without logs.jsonl, or with an empty one).
func logCounts(s *session) string {
	var l logDigest
	if s.logs != nil {
		l = *s.logs
	}
	dropped := s.status.LogsDropped
	if l.records == 0 && dropped == 0 {
		return ""
	}
	var parts []string
	for level := numLevels - 1; level >= 0; level-- {
		if n := l.levels[level]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, levelNames[level]))
		}
	}
	out := fmt.Sprintf("%d records", l.records)
	if l.records == 1 {
		out = "1 record"
	}
	if len(parts) > 0 {
		out += ": " + strings.Join(parts, ", ")
	}
	if dropped > 0 {
		out += fmt.Sprintf("; %d dropped at the cap of %s", dropped, logsink.LogsFile)
	}
	return out
}

// writeLogAlerts lists the last WARN and ERROR log records: time from the
// session's start, level, source, step, message and attrs.
func writeLogAlerts(w io.Writer, s *session) {
	l := s.logs
	switch n := l.alertsSeen - int64(len(l.alerts)); {
	case n == 1:
		fmt.Fprintln(w, "… 1 earlier WARN or ERROR record")
	case n > 1:
		fmt.Fprintf(w, "… %d earlier WARN and ERROR records\n", n)
	}
	t := table{right: []bool{true, false, false, false, false}}
	t.row("TIME", "LEVEL", "SOURCE", "STEP", "MESSAGE")
	for _, r := range l.lastAlerts() {
		at := "-"
		switch {
		case r.ts.IsZero():
		case s.runStart.IsZero():
			at = r.ts.UTC().Format("15:04:05.000")
		case r.ts.Before(s.runStart):
			at = "-" + fmtDuration(s.runStart.Sub(r.ts))
		default:
			at = "+" + fmtDuration(r.ts.Sub(s.runStart))
		}
		msg := oneLine(r.msg, 100)
		if attrs := logAttrs(r.line); attrs != "" {
			msg += "  " + oneLine(attrs, 100)
		}
		t.row(at, levelNames[r.level], cmp.Or(r.source, "-"), cmp.Or(r.step, "-"), msg)
	}
	t.write(w)
}

// logAttrs formats the attrs of a line of logs.jsonl, its fields other
// than the line's own, as sorted key=value pairs.
func logAttrs(line []byte) string {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if dec.Decode(&m) != nil {
		return ""
	}
	for _, k := range []string{"ts", "seq", "session", "level", "source", "step_id", "msg"} {
		delete(m, k)
	}
	if len(m) == 0 {
		return ""
	}
	return pairs(m)
}

// table lays out columns two spaces apart, each left- or right-aligned,
// without trailing blanks (text/tabwriter aligns every column the same
// way and pads the last).
type table struct {
	right []bool // per column
	rows  [][]string
}

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	width := make([]int, len(t.right))
	for _, r := range t.rows {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if t.right[i] {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// sortedSeries orders metrics by step, in the order status.json lists the
// steps (session-wide ones first), then by name.
func sortedSeries(s *session) []*series {
	rank := map[string]int{"": -1}
	for i, st := range s.status.Steps {
		rank[st.ID] = i
	}
	out := slices.Clone(s.series)
	slices.SortStableFunc(out, func(a, b *series) int {
		ra, oka := rank[a.step]
		rb, okb := rank[b.step]
		if !oka {
			ra = len(rank)
		}
		if !okb {
			rb = len(rank)
		}
		if ra != rb {
			return ra - rb
		}
		return strings.Compare(a.name, b.name)
	})
	return out
}

// exitString says how the worker ended.
func exitString(st *host.Status) string {
	x := st.Exit
	s := x.String()
	if x.Success() && x.Reason == "" {
		s = "exited 0"
	}
	return s
}

// followSession prints a live session's events until status.json says
// the run has ended.
func followSession(ctx context.Context, dir string, w io.Writer) error {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	wait := func() error {
		select {
		case <-ctx.Done():
			return errors.New("interrupted")
		case <-tick.C:
			return nil
		}
	}
	statusPath := filepath.Join(dir, host.StatusFile)
	for {
		if _, err := os.Stat(statusPath); err == nil {
			break
		}
		if err := wait(); err != nil {
			return err
		}
	}
	events := filepath.Join(dir, logsink.EventsFile)
	var off int64
	first := true
	for {
		// Read status.json first: once it says the run ended, every event
		// is already in events.jsonl, so one more read gets them all.
		var st host.Status
		b, err := os.ReadFile(statusPath)
		ended := err == nil && json.Unmarshal(b, &st) == nil && st.Outcome != host.OutcomeRunning
		lines, n, err := newLines(events, off)
		if err != nil {
			return err
		}
		off = n
		if first && len(lines) > tailEvents {
			fmt.Fprintf(w, "… %d earlier events\n", len(lines)-tailEvents)
			lines = lines[len(lines)-tailEvents:]
		}
		first = false
		for _, l := range lines {
			fmt.Fprintln(w, eventLine(l))
		}
		if ended {
			return nil
		}
		if err := wait(); err != nil {
			return err
		}
	}
}

// newLines returns the complete lines of path from offset off, and the
// offset after the last of them; a partial last line is left for later.
func newLines(path string, off int64) ([][]byte, int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, off, nil
	}
	if err != nil {
		return nil, off, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, off, err
	}
	var lines [][]byte
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			if err == io.EOF {
				return lines, off, nil
			}
			return lines, off, err
		}
		off += int64(len(line))
		if len(bytes.TrimSpace(line)) > 0 {
			lines = append(lines, line)
		}
	}
}

// eventLine formats one line of events.jsonl for the terminal:
// time (UTC), step, name, then the data as key=value pairs.
func eventLine(line []byte) string {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if dec.Decode(&m) != nil {
		return strings.TrimSpace(string(line))
	}
	ts, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(m["ts"]))
	step, _ := m["step_id"].(string)
	if step == "" {
		step = "-"
	}
	name := fmt.Sprint(m["event"])
	for _, k := range []string{"ts", "seq", "session", "event", "source", "step_id"} {
		delete(m, k)
	}
	s := fmt.Sprintf("%s  %-12s %s", ts.UTC().Format("15:04:05.000"), step, name)
	if len(m) > 0 {
		s += "  " + oneLine(pairs(m), 160)
	}
	return s
}

// pairs formats a map as sorted key=value pairs.
func pairs(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := m[k]
		var vs string
		switch x := v.(type) {
		case string:
			vs = x
			if vs == "" || strings.ContainsAny(vs, " \t\n\"=") {
				vs = strconv.Quote(vs)
			}
		case json.Number:
			vs = x.String()
		case float64:
			vs = fmtValue(x)
		default:
			j, _ := json.Marshal(x)
			vs = string(j)
		}
		b.WriteString(k + "=" + vs)
	}
	return b.String()
}

// oneLine puts s on one line and cuts it to at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func fmtMS(ms int64) string { return fmtDuration(time.Duration(ms) * time.Millisecond) }

// fmtValue prints a metric value: integers as such, others with up to 4
// significant digits.
func fmtValue(v float64) string {
	if v == float64(int64(v)) && v < 1e15 && v > -1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// fmtBytes prints a size in B, KiB, MiB or GiB.
func fmtBytes(n int64) string {
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
