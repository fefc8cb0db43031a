package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tproxy/tproxy"
)

// DefaultCancelGrace is how long a step that reached its Timeout has to
// stop once cancelled before the host kills the worker (RunSpec.CancelGrace).
const DefaultCancelGrace = 10 * time.Second

// StepTimeoutError reports a step whose tproxy.StepSpec.Timeout passed.
// errors.Is matches it with context.DeadlineExceeded.
type StepTimeoutError struct {
	// StepID is the step.
	StepID string
	// Timeout is the step's timeout.
	Timeout time.Duration
	// Stuck says that the driver ignored the cancel for
	// RunSpec.CancelGrace: the host killed the worker, and the run ends.
	// Otherwise the worker stopped the step and stays usable.
	Stuck bool
	// Err is the worker's answer to the cancel, nil when Stuck.
	Err error
}

// Error names the step, the timeout and what became of the driver.
func (e *StepTimeoutError) Error() string {
	if e.Stuck {
		return fmt.Sprintf("tproxy/host: step %q timed out after %v, and its driver ignored the cancel: stuck driver, the worker was killed", e.StepID, e.Timeout)
	}
	return fmt.Sprintf("tproxy/host: step %q timed out after %v; the worker cancelled it", e.StepID, e.Timeout)
}

// Unwrap returns context.DeadlineExceeded and the worker's answer.
func (e *StepTimeoutError) Unwrap() []error {
	if e.Err == nil {
		return []error{context.DeadlineExceeded}
	}
	return []error{context.DeadlineExceeded, e.Err}
}

// errStepTimeout is the cause of an attempt's context when the step's
// Timeout passes.
var errStepTimeout = errors.New("the step's timeout passed")

// runStep runs st, again after each failure its Retry names, and fetches
// the artifacts of every attempt that ran, failed or cancelled ones too.
func (r *Run) runStep(ctx context.Context, st tproxy.StepSpec) error {
	attempts, backoff, on := 1, time.Duration(0), []string{tproxy.ErrorTypeTransient}
	if p := st.Retry; p != nil {
		attempts, backoff = max(p.Attempts, 1), p.Backoff
		if len(p.On) > 0 {
			on = p.On
		}
	}
	for n := 1; ; n++ {
		kind, err := r.attempt(ctx, st, n)
		if err == nil || n == attempts || ctx.Err() != nil || !slices.Contains(on, kind) {
			r.stepChanged(st.ID, func(*StepStatus) {}) // the step's end, for OnStep
			return err
		}
		r.event(ctx, tproxy.EventStepRetry, st.ID, map[string]any{"attempt": n + 1, "attempts": attempts,
			"after_ms": backoff.Milliseconds(), "error_type": r.masker.String(kind), "reason": r.masker.String(err.Error())})
		if err := sleep(ctx, backoff); err != nil {
			return fmt.Errorf("tproxy/host: step %q: waiting to retry: %w", st.ID, err)
		}
		backoff *= 2
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attempt runs st once, as attempt n, records it, and fetches its
// artifacts. It returns the attempt's error and, for a failure a retry
// policy may name, its kind: the error type, or "timeout".
func (r *Run) attempt(ctx context.Context, st tproxy.StepSpec, n int) (kind string, err error) {
	started := time.Now()
	r.stepChanged(st.ID, func(s *StepStatus) {
		s.Status = StepRunning
		s.Attempts = append(s.Attempts, Attempt{N: n, StartedAt: started.UTC()})
	})
	actx, cancel := ctx, context.CancelFunc(func() {})
	if st.Timeout > 0 {
		actx, cancel = context.WithTimeoutCause(ctx, st.Timeout, errStepTimeout)
	}
	defer cancel()
	timedOut := func() bool { return ctx.Err() == nil && context.Cause(actx) == errStepTimeout }
	settle := func() (context.Context, context.CancelFunc) {
		if timedOut() {
			return context.WithTimeout(ctx, r.spec.CancelGrace)
		}
		// The run's end: within what is left of the collect deadline.
		return r.overrunContext(ctx)
	}
	res, err := r.client.execStep(actx, tproxy.ExecStepParams{StepID: st.ID, Driver: st.Driver, Config: st.Config, Inputs: st.Inputs}, settle)

	a := Attempt{N: n, StartedAt: started.UTC(), DurationMS: float64(time.Since(started).Microseconds()) / 1000}
	var (
		arts []tproxy.Artifact
		se   *StepError
		re   *RemoteError
	)
	switch {
	case err == nil:
		a.Status, arts = StepComplete, res.Artifacts
	case errors.As(err, &se):
		a.Status, a.ErrorType, kind = StepFailed, se.ErrorType, se.ErrorType
		arts = failureArtifacts(se.Remote)
		if se.ErrorType == "cancelled" {
			a.Status = StepCancelled
		}
	case errors.As(err, &re) && re.Code == tproxy.CodeRequestCancelled:
		a.Status, a.ErrorType = StepCancelled, "cancelled"
		arts = failureArtifacts(re)
	case errors.Is(err, errUnsettled) || ctx.Err() != nil:
		a.Status = StepCancelled
	default:
		a.Status = StepFailed
	}
	if timedOut() && err != nil {
		stuck := errors.Is(err, errUnsettled)
		if stuck {
			// The driver ignores its cancellation: only ending the worker
			// frees the session, which then cannot go on.
			r.client.kill()
			a.Note = fmt.Sprintf("stuck driver: it ignored the cancel for %v; the worker was killed", r.spec.CancelGrace)
		}
		a.Status, kind = StepTimeout, "timeout"
		te := &StepTimeoutError{StepID: st.ID, Timeout: st.Timeout, Stuck: stuck}
		if !stuck {
			te.Err = err
		}
		err = te
		r.event(ctx, tproxy.EventStepTimeout, st.ID, map[string]any{"attempt": n, "timeout_ms": st.Timeout.Milliseconds(), "stuck": stuck})
	}
	// The worker's own record of the attempt, its lifecycle event, is the
	// one truth: status.json says what events.jsonl says.
	if end, ok := r.ends.take(st.ID); ok {
		a.DurationMS = end.durationMS
		if a.ErrorType == "" || a.Status != StepComplete {
			a.ErrorType = end.errorType
		}
	} else if res != nil {
		a.DurationMS = res.DurationMS
	}
	if err != nil && a.Status != StepComplete {
		a.Error = r.masker.String(err.Error())
	}
	a.ErrorType = r.masker.String(a.ErrorType)
	r.setStep(st.ID, func(s *StepStatus) {
		s.Attempts[len(s.Attempts)-1] = a
		s.Status, s.ErrorType, s.DurationMS, s.Note = a.Status, a.ErrorType, a.DurationMS, a.Note
		if res != nil {
			// Value, not Config: the outputs are data, whose keys the
			// config's secret pointers do not address.
			s.RowsProcessed = res.RowsProcessed
			s.Outputs, _ = r.masker.Value(res.Outputs).(map[string]any)
		}
	})
	if a.Status == StepComplete {
		r.status.StepsCompleted++
	}
	if len(arts) > 0 && !errors.Is(err, errUnsettled) && r.alive() {
		fctx, cancel := ctx, context.CancelFunc(func() {})
		if ctx.Err() != nil {
			fctx, cancel = r.overrunContext(ctx)
		}
		fetchErr := r.fetchArtifacts(fctx, st.ID, arts)
		cancel()
		if err == nil {
			err = fetchErr
		}
	}
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = errors.Join(err, ctx.Err())
	}
	return kind, err
}

// failureArtifacts returns the artifacts listed in a step failure, the
// data of a -32004 or of a cancelled exec_step's -32800.
func failureArtifacts(re *RemoteError) []tproxy.Artifact {
	if re == nil || len(re.Data) == 0 {
		return nil
	}
	var f tproxy.StepFailure
	if json.Unmarshal(re.Data, &f) != nil {
		return nil
	}
	return f.Artifacts
}

// stepEnd is what a worker's step_complete or step_failed event says of
// how a step attempt ended.
type stepEnd struct {
	errorType  string
	durationMS float64
}

// stepEnds holds the last stepEnd of each step, recorded by the
// connection's read loop and taken by the Run once the attempt is
// answered: the worker sends the event before the answer.
type stepEnds struct {
	mu sync.Mutex
	m  map[string]stepEnd
}

func (e *stepEnds) put(stepID string, end stepEnd) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]stepEnd{}
	}
	e.m[stepID] = end
}

func (e *stepEnds) take(stepID string) (stepEnd, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	end, ok := e.m[stepID]
	delete(e.m, stepID)
	return end, ok
}
