// Package workertest runs one driver the way a host would, from a Go test,
// without a manifest, a worker binary or a process.
//
//	func TestUpper(t *testing.T) {
//		res, err := workertest.Run(t.Context(), upperDriver, map[string]any{"text": "hi"}, nil)
//		if err != nil {
//			t.Fatal(err)
//		}
//		if res.Outputs["text"] != "HI" {
//			t.Errorf("outputs = %v", res.Outputs)
//		}
//	}
//
// Run serves a worker holding the driver over transport.InMemory and drives
// it with the real host client: the step runs through prepare, exec_step,
// fetch_artifact and cleanup exactly as in production, with the config
// checks, the step lifecycle, secret masking and the artifact listing
// included. What only crosses the wire as a summary in production, the
// step's outputs, comes back here as the Go values themselves.
package workertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// The ids Run gives the session, the driver and its step, so that a test
// can expect them (Step.ID, Step.Driver, Event.StepID).
const (
	sessionID  = "workertest"
	stepID     = "step"
	driverName = "driver"
	// The helper steps that hand the inputs in and take the outputs
	// out; their records are left out of the Result.
	seedStep    = "workertest.inputs"
	collectStep = "workertest.outputs"
)

// wrapServe, when not nil, wraps the worker Run serves. It is nil but in
// this package's tests, which set it to check every frame the host and
// the worker exchange against docs/schema.
var wrapServe func(serve func(context.Context, io.ReadWriteCloser) error) func(context.Context, io.ReadWriteCloser) error

// Result is what one step of a driver produced, as the host received it,
// plus the outputs the step kept.
type Result struct {
	// Rows is what the step reported with SetRows.
	Rows int64
	// Outputs holds the values the step kept with SetOutput, as the Go
	// values themselves; nil when the step failed (a failed step keeps
	// no outputs).
	Outputs map[string]any
	// Summaries holds what crossed the wire in place of each output
	// (its Summary, or its type and length).
	Summaries map[string]any
	// Events are the step's events in the order emitted, the runtime's
	// lifecycle (step_start, step_complete or step_failed,
	// artifact_refused) among them.
	Events []tproxy.Event
	// Metrics are the step's metrics in the order emitted,
	// rows_processed and step_duration_ms among them.
	Metrics []tproxy.Metric
	// Logs are the records the step wrote to Step.Logger, in order,
	// debug level included.
	Logs []tproxy.LogRecord
	// Artifacts holds the files the step left in its artifact
	// directory, by path, as fetched and checked by the host;
	// cleaned_config.json (its config with secrets masked) among them.
	Artifacts map[string][]byte
}

// Run runs driver d for one step with config and inputs (input name →
// the Go value an earlier step would have kept), and returns what the
// step produced. The step's id is "step" and its driver's name "driver".
// Inputs are handed in by a helper step that runs first, so with inputs
// the step's step_start says step_number 2.
//
// A step that failed returns its Result with a *host.StepError, whose
// ErrorType is the kind of failure (tproxy.ErrorTypeConfig, …). A config
// that a driver made with worker.Typed refuses fails before the step
// runs: the Result is nil and the error a *tproxy.ManifestError naming
// the field. Any other error (the context ended, the worker broke the
// protocol) comes with a nil Result.
func Run(ctx context.Context, d worker.Driver, config, inputs map[string]any) (*Result, error) {
	var (
		mu   sync.Mutex
		kept map[string]any
	)
	w := worker.New("workertest", "0")
	w.Register(driverName, d)
	w.RegisterFunc(seedStep, func(_ context.Context, s *worker.Step) error {
		for name, v := range inputs {
			s.SetOutput(name, v)
		}
		return nil
	})
	w.RegisterFunc(collectStep, func(_ context.Context, s *worker.Step) error {
		out := make(map[string]any, len(s.Inputs()))
		for _, name := range s.Inputs() {
			out[name], _ = s.Input(name)
		}
		mu.Lock()
		kept = out
		mu.Unlock()
		return nil
	})

	sink := &logsink.Memory{}
	// The step's log records are kept by sink; the host's logger would
	// only print them again.
	serve := w.Serve
	if wrapServe != nil {
		serve = wrapServe(serve)
	}
	c, err := host.Start(ctx, &transport.InMemory{Serve: serve}, host.WithSink(sink), host.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return nil, fmt.Errorf("workertest: starting the worker: %w", err)
	}
	res, runErr := run(ctx, c, config, inputs)
	// The worker's records of the step are complete once it has
	// answered; cleanup and Close add none of the step's.
	if _, err := c.Cleanup(ctx); err != nil && runErr == nil && res != nil {
		runErr = fmt.Errorf("workertest: cleanup: %w", err)
		res = nil
	}
	if err := c.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("workertest: closing the worker: %w", err)
		res = nil
	}
	if res == nil {
		return nil, runErr
	}
	for _, e := range sink.Events() {
		if e.StepID == stepID {
			res.Events = append(res.Events, e)
		}
	}
	for _, m := range sink.Metrics() {
		if m.StepID == stepID {
			res.Metrics = append(res.Metrics, m)
		}
	}
	for _, r := range sink.Logs() {
		if r.StepID == stepID {
			res.Logs = append(res.Logs, r)
		}
	}
	mu.Lock()
	res.Outputs = kept
	mu.Unlock()
	return res, runErr
}

// run prepares the session and runs the seed step, the driver's step and,
// if the step succeeded with outputs, the collecting step. The Result is
// nil when the driver's step did not run to an answer.
func run(ctx context.Context, c *host.Client, config, inputs map[string]any) (*Result, error) {
	steps := []tproxy.StepSpec{{ID: stepID, Driver: driverName, Config: config}}
	refs := map[string]tproxy.InputRef{}
	for _, name := range slices.Sorted(maps.Keys(inputs)) {
		refs[name] = tproxy.InputRef{FromStep: seedStep, Key: name}
	}
	if len(inputs) > 0 {
		steps[0].Needs, steps[0].Inputs = []string{seedStep}, refs
		steps = append([]tproxy.StepSpec{{ID: seedStep, Driver: seedStep}}, steps...)
	}
	// The collecting step's inputs are the driver's outputs, known only
	// once it has run; exec_step names them then.
	steps = append(steps, tproxy.StepSpec{ID: collectStep, Driver: collectStep, Needs: []string{stepID}})
	m := tproxy.Manifest{Steps: steps}
	if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: sessionID, Manifest: m, LogLevel: "debug"}); err != nil {
		return nil, err
	}
	if len(inputs) > 0 {
		if _, err := c.ExecStep(ctx, tproxy.ExecStepParams{StepID: seedStep, Driver: seedStep}); err != nil {
			return nil, fmt.Errorf("workertest: handing in the inputs: %w", err)
		}
	}

	res := &Result{}
	out, stepErr := c.ExecStep(ctx, tproxy.ExecStepParams{StepID: stepID, Driver: driverName, Config: config, Inputs: refs})
	var (
		se        *host.StepError
		artifacts []tproxy.Artifact
	)
	switch {
	case stepErr == nil:
		res.Rows, res.Summaries, artifacts = out.RowsProcessed, out.Outputs, out.Artifacts
	case errors.As(stepErr, &se) && se.Remote != nil:
		var f tproxy.StepFailure
		json.Unmarshal(se.Remote.Data, &f) // the host decoded the rest already
		artifacts = f.Artifacts
	default:
		return nil, stepErr
	}
	res.Artifacts = map[string][]byte{}
	for _, a := range artifacts {
		var b bytes.Buffer
		if err := c.FetchArtifact(ctx, stepID, a, &b); err != nil {
			return nil, fmt.Errorf("workertest: fetching artifact %q: %w", a.Path, err)
		}
		res.Artifacts[a.Path] = b.Bytes()
	}
	if stepErr != nil || len(res.Summaries) == 0 {
		return res, stepErr
	}
	keys := map[string]tproxy.InputRef{}
	for k := range res.Summaries {
		keys[k] = tproxy.InputRef{FromStep: stepID, Key: k}
	}
	if _, err := c.ExecStep(ctx, tproxy.ExecStepParams{StepID: collectStep, Driver: collectStep, Inputs: keys}); err != nil {
		return nil, fmt.Errorf("workertest: taking the outputs out: %w", err)
	}
	return res, nil
}
