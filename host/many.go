package host

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// Job is one session of a fan-out: a manifest run by a worker of its own.
type Job struct {
	// Transport starts the job's worker. Every Transport starts a new
	// worker per Start, so jobs may share one value (a
	// *transport.Subprocess, an *e2b.Pool) or have one each.
	Transport transport.Transport
	// Spec is the run. Jobs must not share a session directory: an
	// explicit Spec.Dir must be unique, as must Spec.SessionID when Dir is
	// left to its default. Spec.Sink, if set, receives the job's events
	// and metrics as in RunManifest.
	Spec RunSpec
}

// Result is the outcome of one Job.
type Result struct {
	// SessionID and Dir name the session.
	SessionID, Dir string
	// Status is what RunManifest returned, also in Dir/status.json.
	Status *Status
	// Err is RunManifest's error, nil when the session succeeded.
	Err error
}

// Summary is the outcome of a fan-out.
type Summary struct {
	// Results are the jobs' results, in the order of the jobs.
	Results []Result
	// Succeeded, Failed and Cancelled count the results by outcome
	// (Status.Outcome).
	Succeeded, Failed, Cancelled int
	// Wall is how long Run took.
	Wall time.Duration
	// Events and Metrics count what all the sessions persisted.
	Events, Metrics int64
}

// EventsPerSecond is the fan-out's overall rate of events persisted.
func (s *Summary) EventsPerSecond() float64 { return perSecond(s.Events, s.Wall) }

// Progress is a snapshot of a fan-out in flight.
type Progress struct {
	// Total is the number of jobs; Waiting have not started, Running
	// have, and the others have ended with the outcome they name.
	Total, Waiting, Running, Succeeded, Failed, Cancelled int
	// Events and Metrics count what the sessions have persisted so far.
	Events, Metrics int64
	// StepsTotal is the steps of all the jobs' manifests; StepsEnded
	// counts those that have ended, whatever their state.
	StepsTotal, StepsEnded int
	// Elapsed is the time since Run started.
	Elapsed time.Duration
}

// Done is the number of sessions that have ended.
func (p Progress) Done() int { return p.Succeeded + p.Failed + p.Cancelled }

// EventsPerSecond is the average rate of events since Run started; for a
// current rate, divide the difference of two snapshots' Events.
func (p Progress) EventsPerSecond() float64 { return perSecond(p.Events, p.Elapsed) }

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// ManyError is the error of a fan-out in which some session did not
// succeed. errors.Is and errors.As see every session's error.
type ManyError struct {
	// Failed and Cancelled count the sessions that did not succeed;
	// Total is the number of jobs.
	Failed, Cancelled, Total int
	// Errs are the sessions' errors, in the order of the jobs.
	Errs []error
}

// Error counts the failures and quotes the first.
func (e *ManyError) Error() string {
	first := ""
	if len(e.Errs) > 0 {
		first = ": first: " + e.Errs[0].Error()
	}
	return fmt.Sprintf("tproxy/host: %d of %d sessions failed, %d cancelled%s", e.Failed, e.Total, e.Cancelled, first)
}

// Unwrap returns the sessions' errors.
func (e *ManyError) Unwrap() []error { return e.Errs }

// ErrSessionFailed is the cause (context.Cause) of the context of the
// sessions a Many with StopOnFailure cancels after a session failed.
var ErrSessionFailed = errors.New("tproxy/host: another session of the fan-out failed")

// ErrManyRunning is returned by Many.Run while the same Many is running
// another fan-out.
var ErrManyRunning = errors.New("tproxy/host: this Many is already running a fan-out")

// Many runs many sessions at once: each Job is run by RunManifest, in its
// own session directory with its own worker, at most Parallelism at a
// time. Cancelling Run's context cancels every session in flight, which
// stops its worker, and turns the jobs not yet started into cancelled
// sessions without a worker; every session still gets its status.json.
//
// The zero value runs GOMAXPROCS sessions at a time and does not stop on
// a failure. A Many runs one fan-out at a time; Progress may be called
// from any goroutine, during and after Run.
type Many struct {
	// Parallelism bounds the sessions running at once. Zero means
	// runtime.GOMAXPROCS(0).
	Parallelism int
	// StopOnFailure cancels the other sessions, running or waiting, once
	// one ends unsuccessfully; their context's cause is ErrSessionFailed.
	StopOnFailure bool
	// OnProgress, if set, is called with a snapshot each time a session
	// starts or ends, and each time a step ends. Calls do not overlap; a
	// slow OnProgress slows the sessions that call it.
	OnProgress func(Progress)

	mu       sync.Mutex // guards the counts, start and running
	running  bool
	progress Progress
	start    time.Time
	events   atomic.Int64
	metrics  atomic.Int64
	cbMu     sync.Mutex // serializes OnProgress
}

// RunMany runs jobs with at most parallelism sessions at once; see Many.
func RunMany(ctx context.Context, jobs []Job, parallelism int) (*Summary, error) {
	m := &Many{Parallelism: parallelism}
	return m.Run(ctx, jobs)
}

// Run runs the jobs and returns once every session has ended and its
// worker has stopped. The error is nil when every session succeeded, a
// *ManyError when some did not, and another error, with no session run,
// when two jobs would share a session directory or the Many is already
// running (ErrManyRunning).
func (m *Many) Run(ctx context.Context, jobs []Job) (*Summary, error) {
	jobs, err := sessionDirs(jobs)
	if err != nil {
		return nil, err
	}
	n := m.Parallelism
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return nil, ErrManyRunning
	}
	m.running = true
	m.start = time.Now()
	m.progress = Progress{Total: len(jobs), Waiting: len(jobs)}
	for _, j := range jobs {
		m.progress.StepsTotal += len(j.Spec.Manifest.Steps)
	}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.running = false
		m.mu.Unlock()
	}()
	m.events.Store(0)
	m.metrics.Store(0)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sum := &Summary{Results: make([]Result, len(jobs))}
	var g errgroup.Group
	g.SetLimit(n)
	for i, job := range jobs {
		// Go waits for a free slot; once ctx is cancelled the jobs still
		// waiting run at once, fail fast without a worker, and leave
		// their status.json.
		g.Go(func() error {
			m.update(func(p *Progress) { p.Waiting--; p.Running++ })
			spec := job.Spec
			spec.Sink = logsink.Multi(counter{m}, spec.Sink)
			onStep := spec.OnStep
			spec.OnStep = func(s StepStatus) {
				if s.Status != StepRunning {
					m.update(func(p *Progress) { p.StepsEnded++ })
				}
				if onStep != nil {
					onStep(s)
				}
			}
			st, err := RunManifest(ctx, job.Transport, spec)
			sum.Results[i] = Result{SessionID: spec.SessionID, Dir: spec.Dir, Status: st, Err: err}
			m.update(func(p *Progress) {
				p.Running--
				switch st.Outcome {
				case OutcomeSuccess:
					p.Succeeded++
				case OutcomeCancelled:
					p.Cancelled++
				default:
					p.Failed++
				}
			})
			if st.Outcome != OutcomeSuccess && m.StopOnFailure {
				cancel(ErrSessionFailed)
			}
			return nil
		})
	}
	g.Wait()

	p := m.Progress()
	sum.Succeeded, sum.Failed, sum.Cancelled = p.Succeeded, p.Failed, p.Cancelled
	sum.Wall, sum.Events, sum.Metrics = p.Elapsed, p.Events, p.Metrics
	if sum.Succeeded == len(jobs) {
		return sum, nil
	}
	me := &ManyError{Failed: sum.Failed, Cancelled: sum.Cancelled, Total: len(jobs)}
	for _, r := range sum.Results {
		if r.Err != nil {
			me.Errs = append(me.Errs, r.Err)
		}
	}
	return sum, me
}

// Progress returns a snapshot of the fan-out.
func (m *Many) Progress() Progress {
	m.mu.Lock()
	p := m.progress
	if !m.start.IsZero() {
		p.Elapsed = time.Since(m.start)
	}
	m.mu.Unlock()
	p.Events, p.Metrics = m.events.Load(), m.metrics.Load()
	return p
}

func (m *Many) update(f func(*Progress)) {
	m.mu.Lock()
	f(&m.progress)
	m.mu.Unlock()
	if m.OnProgress != nil {
		m.cbMu.Lock()
		defer m.cbMu.Unlock()
		m.OnProgress(m.Progress())
	}
}

// sessionDirs fixes every job's session id and directory up front, so
// that Results name them and no two jobs share one.
func sessionDirs(jobs []Job) ([]Job, error) {
	out := make([]Job, len(jobs))
	seen := make(map[string]int, len(jobs))
	for i, j := range jobs {
		var dir string
		for try := 0; ; try++ {
			r := NewRun(nil, j.Spec) // fills in the defaults; does no I/O
			dir = filepath.Clean(r.Dir())
			k, dup := seen[dir]
			if !dup {
				j.Spec.SessionID, j.Spec.Dir = r.SessionID(), r.Dir()
				break
			}
			// A generated id may collide (3 random bytes per second);
			// draw again. A given one may not.
			if j.Spec.SessionID != "" || j.Spec.Dir != "" || try > 10 {
				return nil, fmt.Errorf("tproxy/host: jobs %d and %d share the session directory %s", k, i, dir)
			}
		}
		seen[dir] = i
		out[i] = j
	}
	return out, nil
}

// counter is the sink through which Many counts what sessions persist.
type counter struct{ m *Many }

func (c counter) Event(context.Context, tproxy.Event) error {
	c.m.events.Add(1)
	return nil
}

// EventRaw counts an event without decoding it.
func (c counter) EventRaw(context.Context, *wire.RawEvent) error {
	c.m.events.Add(1)
	return nil
}

func (c counter) Metric(context.Context, tproxy.Metric) error {
	c.m.metrics.Add(1)
	return nil
}

func (c counter) Log(context.Context, tproxy.LogRecord) error { return nil }

func (c counter) Flush() error { return nil }
