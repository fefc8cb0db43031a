package conform

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tproxy/tproxy"
)

// Helpers for the checks that run steps: prepare, exec_step and the
// lifecycle of §9.

type cfg = map[string]any

func step(id, driver string, config cfg) tproxy.StepSpec {
	return tproxy.StepSpec{ID: id, Driver: driver, Config: config}
}

// prepare prepares session with steps and checks the result (§5.2). It
// returns the notifications sent before the result.
func (c *checkRun) prepare(session string, steps ...tproxy.StepSpec) []*frame {
	f, notes := c.call("§5.2", tproxy.MethodPrepare, tproxy.PrepareParams{SessionID: session, Manifest: tproxy.Manifest{Steps: steps}})
	c.ready(f, session, steps)
	return notes
}

// ready checks a prepare's result (§5.2).
func (c *checkRun) ready(f *frame, session string, steps []tproxy.StepSpec) {
	r := c.result("§5.2", f, fmt.Sprintf("prepare of session %q", session))
	if st := r.str("status"); st != "ready" {
		c.failf("§5.2", `prepare result: status is %q, not "ready"`, st)
	}
	if id := r.id("session_id"); id != session {
		c.failf("§5.2", "prepare result: session_id is %q; want %q, the params' session_id", id, session)
	}
	r.optStr("session_dir")
	if loaded, ok := r.optStrings("drivers_loaded"); ok {
		var want []string
		for _, s := range steps {
			if !slices.Contains(want, s.Driver) {
				want = append(want, s.Driver)
			}
		}
		sort.Strings(want)
		if !slices.Equal(loaded, want) {
			c.failf("§5.2", "prepare result: drivers_loaded is %q; want %q, the manifest's distinct drivers, sorted", loaded, want)
		}
	}
}

// exec sends exec_step.
func (c *checkRun) exec(stepID, driver string, config cfg, inputs map[string]tproxy.InputRef) request {
	return c.send(tproxy.MethodExecStep, tproxy.ExecStepParams{StepID: stepID, Driver: driver, Config: config, Inputs: inputs})
}

// stepResult is an exec_step result, checked against §5.3.
type stepResult struct {
	shape
	rows      int64
	outputs   shape
	artifacts []artifact
}

// execOK runs a step that must succeed and returns its result and the
// notifications sent before it.
func (c *checkRun) execOK(sec, stepID, driver string, config cfg, inputs map[string]tproxy.InputRef) (stepResult, []*frame) {
	f, notes := c.await(sec, c.exec(stepID, driver, config, inputs))
	return c.stepResult(f, stepID, driver), notes
}

// stepResult checks a successful exec_step response (§5.3).
func (c *checkRun) stepResult(f *frame, stepID, driver string) stepResult {
	r := c.result("§5.3", f, fmt.Sprintf("exec_step of step %q (driver %s)", stepID, driver))
	if st := r.str("status"); st != "complete" {
		c.failf("§5.3", `exec_step result: status is %q, not "complete"`, st)
	}
	if id := r.id("step_id"); id != stepID {
		c.failf("§5.3", "exec_step result: step_id is %q; want %q", id, stepID)
	}
	if d := r.number("duration_ms"); d < 0 {
		c.failf("§5.3", "exec_step result: duration_ms is negative: %v", d)
	}
	res := stepResult{shape: r}
	if n, ok := r.optInteger("rows_processed"); ok {
		if n < 0 {
			c.failf("§5.3", "exec_step result: rows_processed is negative: %d", n)
		}
		res.rows = n
	}
	res.outputs, _ = r.optObject("outputs")
	res.artifacts = r.artifacts("artifacts")
	return res
}

// stepFailure checks the data of a -32004 answer (§7) and returns it.
func (c *checkRun) stepFailure(e *rpcError, stepID string) shape {
	d := c.shape("§7", "the step failure (data of -32004)", e.data)
	if id := d.id("step_id"); id != stepID {
		c.failf("§7", "step failure: step_id is %q; want %q", id, stepID)
	}
	d.str("error_type")
	d.str("message")
	d.artifacts("artifacts")
	return d
}

// find returns the index of the first notification of notes that match
// accepts, or -1.
func find(notes []*frame, match func(*frame) bool) int {
	return slices.IndexFunc(notes, match)
}

func isEvent(name, stepID string) func(*frame) bool {
	return func(f *frame) bool { return f.event() == name && (stepID == "" || f.stepID() == stepID) }
}

func isMetric(name, stepID string) func(*frame) bool {
	return func(f *frame) bool { return f.metric() == name && (stepID == "" || f.stepID() == stepID) }
}

func count(notes []*frame, match func(*frame) bool) int {
	n := 0
	for _, f := range notes {
		if match(f) {
			n++
		}
	}
	return n
}

// lifecycle names the events of §9 that a step's run emits.
var lifecycle = []string{"step_start", "step_complete", "step_failed"}

// noLifecycle fails if notes hold a lifecycle event of stepID, the step
// a refused exec_step named: errors that come before the driver runs emit
// none (§9).
func (c *checkRun) noLifecycle(notes []*frame, stepID, what string) {
	for _, f := range notes {
		if slices.Contains(lifecycle, f.event()) && f.stepID() == stepID {
			c.failf("§9", "%s emitted %s; an error that comes before the driver runs emits no lifecycle events", what, f.describe())
		}
	}
}

// data reads an event's data.
func (c *checkRun) data(sec string, f *frame) shape {
	v, ok := f.params["data"]
	if !ok || v == nil {
		c.failf(sec, "%s of step %q has no data", f.describe(), f.stepID())
	}
	return c.shape(sec, fmt.Sprintf("%s of step %q: data", f.describe(), f.stepID()), v)
}

// stepStart finds the one step_start of stepID in notes and checks it
// (§9). number > 0 is the step_number it must carry.
func (c *checkRun) stepStart(notes []*frame, stepID, driver string, number int64) int {
	i := find(notes, isEvent("step_start", stepID))
	if i < 0 {
		c.failf("§9", "no step_start event with step_id %q before the answer to its exec_step%s", stepID, c.stepIDHint(notes, "step_start"))
	}
	if n := count(notes, isEvent("step_start", stepID)); n > 1 {
		c.failf("§9", "%d step_start events for step %q; want one", n, stepID)
	}
	d := c.data("§9", notes[i])
	if dr := d.str("driver"); dr != driver {
		c.failf("§9", "step_start of step %q: data.driver is %q; want %q", stepID, dr, driver)
	}
	if n := d.integer("step_number"); number > 0 && n != number {
		c.failf("§9", "step_start of step %q: step_number is %d; want %d (the session's exec_step calls that reached a driver)", stepID, n, number)
	}
	return i
}

// stepIDHint explains a missing step event that was sent without the
// step_id member (§9: step events carry it in the notification, not in
// data).
func (c *checkRun) stepIDHint(notes []*frame, name string) string {
	if i := find(notes, isEvent(name, "")); i >= 0 {
		return fmt.Sprintf(" (there is one with step_id %q: step events carry the step's id in the notification's step_id member)", notes[i].stepID())
	}
	return ""
}

// succeeded checks the lifecycle of a step that succeeded (§9) in the
// notifications before its response: step_start, the driver's own
// notifications (ticks conform_tick events here), then rows_processed
// (only when rows ≠ 0), step_duration_ms and step_complete.
func (c *checkRun) succeeded(notes []*frame, stepID, driver string, number, rows int64, ticks int, outputs []string) {
	start := c.stepStart(notes, stepID, driver, number)
	if i := find(notes, isEvent("step_failed", stepID)); i >= 0 {
		c.failf("§9", "step %q succeeded but sent step_failed", stepID)
	}
	last := start // the last of the driver's notifications
	k := 0
	for i, f := range notes {
		if f.event() != "conform_tick" {
			continue
		}
		if f.stepID() != stepID {
			c.failf("§9", "conform_tick event %d has step_id %q; the driver's events carry their step's id, %q", k, f.stepID(), stepID)
		}
		if i < start {
			c.failf("§9", "conform_tick event %d came before step_start; step_start goes out before the driver runs", k)
		}
		if n := c.data("§13", f).integer("i"); n != int64(k) {
			c.failf("§8", "conform_tick event %d has i = %d; notifications are written in the order they were emitted", k, n)
		}
		k++
		last = i
	}
	if k != ticks {
		c.failf("§8", "%d conform_tick events before the answer to exec_step of step %q; want %d, all before the response", k, stepID, ticks)
	}

	done := find(notes, isEvent("step_complete", stepID))
	if done < 0 {
		c.failf("§9", "no step_complete event with step_id %q before the answer to its exec_step%s", stepID, c.stepIDHint(notes, "step_complete"))
	}
	if n := count(notes, isEvent("step_complete", stepID)); n > 1 {
		c.failf("§9", "%d step_complete events for step %q; want one", n, stepID)
	}
	if done < last {
		c.failf("§9", "step_complete of step %q came before the driver's last event", stepID)
	}
	d := c.data("§9", notes[done])
	if dr := d.str("driver"); dr != driver {
		c.failf("§9", "step_complete of step %q: data.driver is %q; want %q", stepID, dr, driver)
	}
	if n := d.integer("rows_processed"); n != rows {
		c.failf("§9", "step_complete of step %q: data.rows_processed is %d; want %d", stepID, n, rows)
	}
	if ms := d.number("duration_ms"); ms < 0 {
		c.failf("§9", "step_complete of step %q: data.duration_ms is negative: %v", stepID, ms)
	}
	got, _ := d.optStrings("outputs")
	if !slices.Equal(got, outputs) && !(len(got) == 0 && len(outputs) == 0) {
		c.failf("§9", "step_complete of step %q: data.outputs is %q; want %q, the output keys, sorted", stepID, got, outputs)
	}

	dur := find(notes, isMetric("step_duration_ms", stepID))
	if dur < 0 {
		c.failf("§9", "no step_duration_ms metric with step_id %q before the answer to its exec_step", stepID)
	}
	m, _ := asShape("step_duration_ms metric", notes[dur].params, c.failer("§9"))
	if u, _ := m.optStr("unit"); u != "ms" {
		c.failf("§9", `step_duration_ms metric of step %q: unit is %q, not "ms"`, stepID, u)
	}
	if v := m.number("value"); v < 0 {
		c.failf("§9", "step_duration_ms metric of step %q is negative: %v", stepID, v)
	}
	if dur < last {
		c.failf("§9", "step_duration_ms of step %q came before the driver's last event", stepID)
	}

	rp := find(notes, isMetric("rows_processed", stepID))
	switch {
	case rows == 0 && rp >= 0:
		c.failf("§9", "a rows_processed metric for step %q, which processed no rows; it is sent only when rows ≠ 0", stepID)
	case rows != 0 && rp < 0:
		c.failf("§9", "no rows_processed metric with step_id %q before the answer to its exec_step (%d rows)", stepID, rows)
	case rows != 0:
		m, _ := asShape("rows_processed metric", notes[rp].params, c.failer("§9"))
		if v := m.number("value"); v != float64(rows) {
			c.failf("§9", "rows_processed metric of step %q is %v; want %d", stepID, v, rows)
		}
		if rp < last {
			c.failf("§9", "rows_processed of step %q came before the driver's last event", stepID)
		}
	}
}

// failed checks the lifecycle of a step that failed (§9) in the
// notifications before its answer, and returns step_failed's data.
func (c *checkRun) failed(notes []*frame, stepID, driver string, number int64) shape {
	start := c.stepStart(notes, stepID, driver, number)
	if i := find(notes, isEvent("step_complete", stepID)); i >= 0 {
		c.failf("§9", "step %q failed but sent step_complete", stepID)
	}
	i := find(notes, isEvent("step_failed", stepID))
	if i < 0 {
		c.failf("§9", "no step_failed event with step_id %q before the answer to its exec_step%s", stepID, c.stepIDHint(notes, "step_failed"))
	}
	if i < start {
		c.failf("§9", "step_failed of step %q came before its step_start", stepID)
	}
	d := c.data("§9", notes[i])
	if dr := d.str("driver"); dr != driver {
		c.failf("§9", "step_failed of step %q: data.driver is %q; want %q", stepID, dr, driver)
	}
	d.str("error_type")
	d.str("message")
	if ms := d.number("duration_ms"); ms < 0 {
		c.failf("§9", "step_failed of step %q: data.duration_ms is negative: %v", stepID, ms)
	}
	return d
}

// waitEvent reads frames until the event name of stepID arrives while
// req runs, and returns the notifications read. req's answer before it
// fails the check.
func (c *checkRun) waitEvent(sec, name, stepID string, req request) []*frame {
	var notes []*frame
	for {
		f := c.next(sec, fmt.Sprintf("the %s event of step %q", name, stepID))
		if f.method != "" {
			notes = append(notes, f)
			if f.event() == name && f.stepID() == stepID {
				return notes
			}
			continue
		}
		k := idKey(f.id)
		switch _, pending := c.pending[k]; {
		case k == req.key:
			what := "a result"
			if f.err != nil {
				what = f.err.String()
			}
			c.failf(sec, "%s was answered (%s) before its %s event%s", req, what, name, c.stepIDHint(notes, name))
		case pending:
			c.stash[k] = f
		default:
			c.unexpected(f)
		}
	}
}

// cancel sends $/cancelRequest for req (§6.5).
func (c *checkRun) cancel(req request) {
	c.writeLine(fmt.Sprintf(`{"jsonrpc":"2.0","method":%q,"params":{"id":%s}}`, tproxy.MethodCancelRequest, req.id))
}

// raw is params given as JSON text, sent verbatim (json.Marshal keeps a
// RawMessage's notation: 2.0 stays 2.0).
func raw(s string) json.RawMessage { return json.RawMessage(s) }

// since formats how long ago t was, for messages.
func since(t time.Time) string { return time.Since(t).Round(time.Millisecond).String() }

// paths lists artifacts' paths for messages.
func paths(arts []artifact) string {
	var p []string
	for _, a := range arts {
		p = append(p, a.path)
	}
	return strings.Join(p, ", ")
}
