package host

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// The files of a session directory besides logsink.EventsFile and
// logsink.MetricsFile.
const (
	// StatusFile is the run's summary, written after every run.
	StatusFile = "status.json"
	// ManifestFile is the manifest as run, secrets masked.
	ManifestFile = "manifest.json"
	// ArtifactsDir holds each step's artifacts under <step id>/.
	ArtifactsDir = "artifacts"
)

// Defaults of ArtifactPolicy and Run.
const (
	DefaultMaxArtifactFileBytes  = 256 << 20
	DefaultMaxArtifactTotalBytes = 1 << 30
	// DefaultCollectTimeout bounds the collect phase (cleanup, shutdown)
	// when it runs after the caller's context has ended.
	DefaultCollectTimeout = 30 * time.Second
)

// ArtifactPolicy says which artifacts the host fetches. The worker's
// cleaned_config.json of each step is always fetched.
type ArtifactPolicy struct {
	// Include are path.Match patterns matched against an artifact's path
	// and, for patterns without '/', its base name: "*.csv",
	// "reports/*". Empty means every artifact.
	Include []string
	// MaxFileBytes skips a larger file; DefaultMaxArtifactFileBytes when
	// zero.
	MaxFileBytes int64
	// MaxTotalBytes skips files once a session has fetched this many
	// bytes; DefaultMaxArtifactTotalBytes when zero.
	MaxTotalBytes int64
}

// RunSpec describes one run of a manifest.
type RunSpec struct {
	// SessionID names the session; a fresh "run_<time>_<random>" id when
	// empty.
	SessionID string
	// Dir is the session directory, created if needed; it must be empty.
	// Default: $TMPDIR/tproxy-sessions/<SessionID>.
	Dir string
	// Manifest is the pipeline to run.
	Manifest tproxy.Manifest
	// Config is the session-wide configuration sent with prepare.
	Config map[string]any
	// Secrets names the config values to mask everywhere, in addition to
	// tproxy.DefaultSecretKeys.
	Secrets tproxy.Secrets
	// Artifacts says which artifacts are fetched.
	Artifacts ArtifactPolicy
	// Timeout bounds the whole session, from the start of Prepare to the
	// end of Execute; zero means no bound beyond the caller's context.
	// When it passes, the step in flight is cancelled in the worker and
	// the run fails with FailureTimeout; Collect still runs.
	Timeout time.Duration
	// ContinueOnError runs the steps that do not depend on a failed step
	// instead of stopping at the first failure.
	ContinueOnError bool
	// LogLevel is the lowest level of driver log records the worker sends.
	LogLevel string
	// Sink also receives every event and metric, e.g. a logsink.Console
	// for a live view. The session's files always receive them.
	Sink logsink.Sink
	// Options configure the client (logger, frame size, heartbeats). A
	// WithSink option here is overridden by the session's sink.
	Options []Option
}

// A Run is one session: a manifest run by one worker, recorded in one
// session directory. Its three phases are the ones orchestrators expect:
// Prepare (validate, start the worker, open the session), Execute (the
// steps, in dependency order, fetching each step's artifacts as it ends),
// and Collect (clean up, stop the worker, write status.json).
//
// Collect must be called after every Prepare, successful or not: it is
// what guarantees status.json. RunManifest does all three.
type Run struct {
	t      transport.Transport
	spec   RunSpec
	masker *tproxy.Masker
	order  []tproxy.StepSpec
	files  *logsink.Files
	sink   logsink.Sink
	client *Client

	status    Status
	err       error // the run's first failure
	prepared  bool  // the worker's session is open
	collected bool
	ownDir    bool // this run created or emptied-checked the session directory
	start     time.Time
	artBytes  int64
	deadline  time.Time // from RunSpec.Timeout; zero when none
}

// NewRun returns a Run of spec through t. It does no I/O.
func NewRun(t transport.Transport, spec RunSpec) *Run {
	if spec.SessionID == "" {
		var b [3]byte
		rand.Read(b[:])
		spec.SessionID = "run_" + time.Now().UTC().Format("20060102T150405Z") + "_" + hex.EncodeToString(b[:])
	}
	if spec.Dir == "" {
		spec.Dir = filepath.Join(os.TempDir(), "tproxy-sessions", spec.SessionID)
	}
	if spec.Artifacts.MaxFileBytes == 0 {
		spec.Artifacts.MaxFileBytes = DefaultMaxArtifactFileBytes
	}
	if spec.Artifacts.MaxTotalBytes == 0 {
		spec.Artifacts.MaxTotalBytes = DefaultMaxArtifactTotalBytes
	}
	r := &Run{t: t, spec: spec}
	r.status = Status{SessionID: spec.SessionID, Dir: spec.Dir, Outcome: OutcomeFailed, StepsTotal: len(spec.Manifest.Steps)}
	for _, st := range spec.Manifest.Steps {
		r.status.Steps = append(r.status.Steps, StepStatus{ID: st.ID, Driver: st.Driver, Status: StepNotRun})
	}
	return r
}

// RunManifest runs spec through t: Prepare, Execute and Collect. It returns
// the run's status, also written to status.json in the session directory,
// and the run's first error, which keeps its type (a *StepError, a
// *tproxy.ManifestError, an error wrapping *transport.ExitError, ...).
func RunManifest(ctx context.Context, t transport.Transport, spec RunSpec) (*Status, error) {
	r := NewRun(t, spec)
	if err := r.Prepare(ctx); err == nil {
		r.Execute(ctx)
	}
	return r.Collect(ctx)
}

// SessionID returns the run's session id.
func (r *Run) SessionID() string { return r.spec.SessionID }

// Dir returns the run's session directory.
func (r *Run) Dir() string { return r.spec.Dir }

// Client returns the connection to the worker once Prepare has started
// it, for calls of the caller's own; nil before.
func (r *Run) Client() *Client { return r.client }

// Prepare validates the manifest, creates the session directory with
// manifest.json and the log files, starts the worker, checks that it has
// every driver the manifest names, and opens the session in it.
func (r *Run) Prepare(ctx context.Context) error {
	r.start = time.Now()
	r.status.StartedAt = r.start.UTC()
	if r.spec.Timeout > 0 {
		r.deadline = r.start.Add(r.spec.Timeout)
	}
	ctx, cancel := r.sessionContext(ctx)
	defer cancel()
	err := withCause(ctx, r.prepare(ctx))
	r.status.Phases.PrepareMS = msSince(r.start)
	if err != nil {
		return r.fail("", err)
	}
	r.event(ctx, "phase_complete", "", map[string]any{"phase": "prepare", "duration_ms": r.status.Phases.PrepareMS})
	return nil
}

func (r *Run) prepare(ctx context.Context) error {
	if r.t == nil {
		return errors.New("tproxy/host: Run has no transport")
	}
	if err := tproxy.ValidateID("session id", r.spec.SessionID); err != nil {
		return fmt.Errorf("tproxy/host: %w", err)
	}
	m, err := tproxy.NewMasker(r.spec.Secrets)
	if err != nil {
		return err
	}
	r.masker = m
	m.Learn(r.spec.Config)
	masked := r.spec.Manifest
	masked.Steps = slices.Clone(masked.Steps)
	for i := range masked.Steps {
		masked.Steps[i].Config = m.Config(masked.Steps[i].Config)
	}
	masked.Pipeline, _ = m.Value(masked.Pipeline).(map[string]any)

	if err := makeSessionDir(r.spec.Dir); err != nil {
		return err
	}
	r.ownDir = true
	if err := writeJSON(filepath.Join(r.spec.Dir, ManifestFile), masked); err != nil {
		return err
	}
	files, err := logsink.OpenDir(r.spec.Dir, r.spec.SessionID)
	if err != nil {
		return err
	}
	r.files = files
	var sink logsink.Sink = files
	if r.spec.Sink != nil {
		sink = logsink.Multi(files, r.spec.Sink)
	}
	if m.HasValues() {
		sink = logsink.Mask(sink, m)
	}
	r.sink = sink
	r.event(ctx, "run_start", "", map[string]any{"session_id": r.spec.SessionID, "steps_total": len(r.spec.Manifest.Steps)})

	order, err := r.spec.Manifest.Order()
	if err != nil {
		return err
	}
	r.order = order

	opts := append(slices.Clone(r.spec.Options), WithSink(sink))
	c, err := Start(ctx, r.t, opts...)
	if err != nil {
		return err
	}
	r.client = c
	info := c.Worker().Worker
	r.status.Worker = &info
	for _, st := range order {
		if !slices.Contains(info.Drivers, st.Driver) {
			return &tproxy.ManifestError{StepID: st.ID, Reason: fmt.Sprintf("no driver %q in worker %s %s (it has: %v)", st.Driver, info.Name, info.Version, info.Drivers)}
		}
	}
	secrets := r.spec.Secrets
	if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: r.spec.SessionID, Manifest: r.spec.Manifest,
		Config: r.spec.Config, LogLevel: r.spec.LogLevel, Secrets: &secrets}); err != nil {
		return err
	}
	r.prepared = true
	return nil
}

// Execute runs the steps in dependency order, wiring each step's inputs to
// outputs kept in the worker, and fetches each step's artifacts when it
// ends. It stops at the first failed step unless ContinueOnError is set,
// in which case only the steps that depend on a failed step are skipped.
func (r *Run) Execute(ctx context.Context) error {
	if !r.prepared || r.err != nil {
		if r.err != nil {
			return r.err
		}
		return errors.New("tproxy/host: Execute before a successful Prepare")
	}
	start := time.Now()
	defer func() { r.status.Phases.ExecuteMS = msSince(start) }()
	ctx, cancel := r.sessionContext(ctx)
	defer cancel()
	failed := map[string]bool{}
	for _, st := range r.order {
		if slices.ContainsFunc(st.Needs, func(n string) bool { return failed[n] }) {
			failed[st.ID] = true
			r.setStep(st.ID, func(s *StepStatus) { s.Status = StepSkipped })
			r.event(ctx, "step_skipped", st.ID, map[string]any{"reason": "a step it needs failed"})
			continue
		}
		if err := withCause(ctx, r.runStep(ctx, st)); err != nil {
			failed[st.ID] = true
			r.fail(st.ID, err)
			if !r.spec.ContinueOnError || ctx.Err() != nil || !isStepFailure(err) {
				break
			}
		}
	}
	if r.err == nil {
		r.event(ctx, "phase_complete", "", map[string]any{"phase": "execute", "duration_ms": msSince(start)})
	}
	return r.err
}

// isStepFailure reports whether err failed only its step, leaving the
// worker able to run the next one.
func isStepFailure(err error) bool {
	var se *StepError
	return errors.As(err, &se) && se.ErrorType != "cancelled"
}

func (r *Run) runStep(ctx context.Context, st tproxy.StepSpec) error {
	res, err := r.client.ExecStep(ctx, tproxy.ExecStepParams{StepID: st.ID, Driver: st.Driver, Config: st.Config, Inputs: st.Inputs})
	var arts []tproxy.Artifact
	var se *StepError
	switch {
	case err == nil:
		arts = res.Artifacts
		r.status.StepsCompleted++
		r.setStep(st.ID, func(s *StepStatus) {
			s.Status, s.RowsProcessed, s.DurationMS = StepComplete, res.RowsProcessed, res.DurationMS
		})
	case errors.As(err, &se):
		r.setStep(st.ID, func(s *StepStatus) { s.Status, s.ErrorType = StepFailed, se.ErrorType })
		var f tproxy.StepFailure
		if json.Unmarshal(se.Remote.Data, &f) == nil {
			arts = f.Artifacts
		}
	default:
		r.setStep(st.ID, func(s *StepStatus) { s.Status = StepFailed })
		return err
	}
	if ctx.Err() != nil {
		return errors.Join(err, ctx.Err())
	}
	fetchErr := r.fetchArtifacts(ctx, st.ID, arts)
	if err != nil {
		return err
	}
	return fetchErr
}

// fetchArtifacts copies the step's artifacts that the policy admits into
// artifacts/<step id>/ of the session directory.
func (r *Run) fetchArtifacts(ctx context.Context, stepID string, arts []tproxy.Artifact) error {
	if len(arts) == 0 {
		return nil
	}
	dir := filepath.Join(r.spec.Dir, ArtifactsDir, stepID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, a := range arts {
		if err := tproxy.CheckArtifactPath(a.Path); err != nil {
			return &ArtifactError{StepID: stepID, Path: a.Path, Reason: "refused: " + err.Error()}
		}
		if skip := r.skipReason(a); skip != "" {
			r.status.Artifacts.Skipped++
			r.event(ctx, "artifact_skipped", stepID, map[string]any{"path": a.Path, "size": a.Size, "reason": skip})
			continue
		}
		if err := r.fetchOne(ctx, root, stepID, a); err != nil {
			return err
		}
		r.artBytes += a.Size
		r.status.Artifacts.Files++
		r.status.Artifacts.Bytes += a.Size
		r.setStep(stepID, func(s *StepStatus) { s.Artifacts = append(s.Artifacts, a) })
	}
	return nil
}

func (r *Run) skipReason(a tproxy.Artifact) string {
	p := r.spec.Artifacts
	switch {
	case a.Path == "cleaned_config.json":
		return ""
	case a.Size > p.MaxFileBytes:
		return fmt.Sprintf("%d bytes is over the per-file cap of %d", a.Size, p.MaxFileBytes)
	case r.artBytes+a.Size > p.MaxTotalBytes:
		return fmt.Sprintf("the session's artifacts would exceed the cap of %d bytes", p.MaxTotalBytes)
	case len(p.Include) == 0:
		return ""
	}
	for _, pat := range p.Include {
		if ok, _ := path.Match(pat, a.Path); ok {
			return ""
		}
		if ok, _ := path.Match(pat, path.Base(a.Path)); ok && !strings.Contains(pat, "/") {
			return ""
		}
	}
	return "matches no include pattern"
}

func (r *Run) fetchOne(ctx context.Context, root *os.Root, stepID string, a tproxy.Artifact) error {
	if d := path.Dir(a.Path); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return &ArtifactError{StepID: stepID, Path: a.Path, Reason: "refused: " + err.Error()}
		}
	}
	f, err := root.OpenFile(a.Path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return &ArtifactError{StepID: stepID, Path: a.Path, Reason: "refused: " + err.Error()}
	}
	err = r.client.FetchArtifact(ctx, stepID, a, f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("tproxy/host: writing artifact %q of step %q: %w", a.Path, stepID, cerr)
	}
	if err != nil {
		root.Remove(a.Path) // never leave bytes that failed verification
	}
	return err
}

// Collect ends the run: it cleans up the worker's session, stops the
// worker, records the artifact metrics and the final event, closes the log
// files and writes status.json. It runs even when ctx has ended, bounded
// by DefaultCollectTimeout, and may be called after any phase failed. It
// returns the status and the run's first error; later calls return the
// same.
func (r *Run) Collect(ctx context.Context) (*Status, error) {
	if r.collected {
		st := r.status
		return &st, r.err
	}
	r.collected = true
	if r.start.IsZero() {
		r.start = time.Now()
		r.status.StartedAt = r.start.UTC()
	}
	start := time.Now()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultCollectTimeout)
	defer cancel()

	if r.client != nil {
		if r.prepared && r.alive() {
			if _, err := r.client.Cleanup(cctx); err != nil {
				r.fail("", err)
			}
		}
		if err := r.client.Close(); err != nil {
			r.fail("", err)
		}
		exit := r.client.Process().Exit()
		r.status.Exit = &exit
		r.status.StderrTail = r.masker.String(string(r.client.Process().StderrTail()))
		r.status.Protocol = r.client.ProtocolCounts()
	}
	r.status.Phases.CollectMS = msSince(start)
	r.status.FinishedAt = time.Now().UTC()
	r.status.DurationMS = msSince(r.start)
	if r.err == nil {
		r.status.Outcome = OutcomeSuccess
	}
	if r.sink != nil {
		now := time.Now().UTC()
		r.sink.Metric(cctx, tproxy.Metric{Name: "artifacts_files_total", Value: float64(r.status.Artifacts.Files), Timestamp: now})
		r.sink.Metric(cctx, tproxy.Metric{Name: "artifacts_bytes_total", Value: float64(r.status.Artifacts.Bytes), Timestamp: now, Unit: "bytes"})
		r.event(cctx, "phase_complete", "", map[string]any{"phase": "collect", "duration_ms": r.status.Phases.CollectMS})
		if r.err == nil {
			r.event(cctx, "run_complete", "", map[string]any{"steps_completed": r.status.StepsCompleted,
				"steps_total": r.status.StepsTotal, "duration_ms": r.status.DurationMS})
		} else {
			f := r.status.Failure
			data := map[string]any{"outcome": r.status.Outcome, "kind": f.Kind, "reason": f.Reason,
				"steps_completed": r.status.StepsCompleted, "steps_total": r.status.StepsTotal, "duration_ms": r.status.DurationMS}
			r.event(cctx, "run_failed", f.StepID, data)
		}
	}
	if r.files != nil {
		if err := r.files.Close(); err != nil {
			r.fail("", &SinkError{Op: "closing the session's log files", Err: err})
			r.status.Outcome = OutcomeFailed
		}
	}
	st := r.status
	if err := r.writeStatus(); err != nil {
		r.err = errors.Join(r.err, err)
	}
	return &st, r.err
}

// alive reports whether the connection to the worker is still open.
func (r *Run) alive() bool {
	select {
	case <-r.client.Done():
		return false
	default:
		return true
	}
}

// fail records err as the run's failure if it is the first, and returns
// err.
func (r *Run) fail(stepID string, err error) error {
	if r.err != nil {
		return err
	}
	r.err = err
	kind := failureKind(err)
	r.status.Outcome = OutcomeFailed
	if kind == FailureCancelled {
		r.status.Outcome = OutcomeCancelled
	}
	var me *tproxy.ManifestError
	if errors.As(err, &me) && stepID == "" {
		stepID = me.StepID
	}
	f := &Failure{Kind: kind, StepID: stepID, Reason: r.masker.String(err.Error())}
	var se *StepError
	if errors.As(err, &se) {
		f.ErrorType = se.ErrorType
	}
	r.status.Failure = f
	return err
}

func (r *Run) setStep(id string, f func(*StepStatus)) {
	for i := range r.status.Steps {
		if r.status.Steps[i].ID == id {
			f(&r.status.Steps[i])
			return
		}
	}
}

// event writes a host-side event to the session's sink. A write error is
// sticky in the sink and surfaces at the next flush or at Close.
func (r *Run) event(ctx context.Context, name, stepID string, data map[string]any) {
	if r.sink == nil {
		return
	}
	r.sink.Event(ctx, tproxy.Event{Name: name, Timestamp: time.Now().UTC(), StepID: stepID, Data: data, Source: tproxy.SourceHost})
}

func (r *Run) writeStatus() error {
	if !r.ownDir {
		return fmt.Errorf("tproxy/host: no %s written: the run never had its session directory %s", StatusFile, r.spec.Dir)
	}
	return writeJSON(filepath.Join(r.spec.Dir, StatusFile), r.status)
}

// makeSessionDir creates dir, refusing one that holds files: a session
// directory belongs to one run.
func makeSessionDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("tproxy/host: creating the session directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("tproxy/host: reading the session directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("tproxy/host: session directory %s is not empty (it holds %s): a session directory belongs to one run", dir, entries[0].Name())
	}
	return nil
}

// writeJSON writes v to path atomically: a crash leaves the old file or the
// new one, never half of one.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("tproxy/host: encoding %s: %w", filepath.Base(path), err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("tproxy/host: writing %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tproxy/host: writing %s: %w", filepath.Base(path), err)
	}
	return nil
}

// withCause adds ctx's cause to an error ctx's end caused, when the cause
// says more than the context's own error: the session's timeout.
func withCause(ctx context.Context, err error) error {
	var te *SessionTimeoutError
	if err != nil && ctx.Err() != nil && errors.As(context.Cause(ctx), &te) && !errors.As(err, &te) {
		return fmt.Errorf("%w: %w", te, err)
	}
	return err
}

// sessionContext bounds ctx by the session's deadline, if it has one.
func (r *Run) sessionContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.deadline.IsZero() {
		return ctx, func() {}
	}
	return context.WithDeadlineCause(ctx, r.deadline, &SessionTimeoutError{Timeout: r.spec.Timeout})
}

func msSince(t time.Time) int64 { return time.Since(t).Milliseconds() }
