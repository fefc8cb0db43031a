package host

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/check"
	"github.com/tproxy/tproxy/internal/mask"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// The files of a session directory besides logsink.EventsFile and
// logsink.MetricsFile.
const (
	// StatusFile is the run's summary: written when Prepare claims the
	// session directory (outcome "running") and rewritten by Collect.
	StatusFile = "status.json"
	// ManifestFile is the manifest as run, secrets masked.
	ManifestFile = "manifest.json"
	// ArtifactsDir holds each step's artifacts under <step id>/.
	ArtifactsDir = "artifacts"
)

// Defaults of ArtifactPolicy and RunSpec: the caps on what a worker can
// make the host spend in one session, and the time Collect is given.
const (
	DefaultMaxArtifactFileBytes  = 256 << 20
	DefaultMaxArtifactTotalBytes = 1 << 30
	// DefaultMaxArtifactFiles caps the artifacts fetched per session.
	DefaultMaxArtifactFiles = 10_000
	// DefaultMaxLogBytes caps events.jsonl and metrics.jsonl together.
	DefaultMaxLogBytes = 1 << 30
	// DefaultCollectGrace is how long Collect may run past the caller's
	// deadline (see RunSpec.CollectGrace).
	DefaultCollectGrace = 5 * time.Second
)

// maxCleanedConfigBytes caps the worker runtime's cleaned_config.json of
// a step, which is fetched whatever the include patterns: it is the
// step's config, never data, so a larger one is a worker misbehaving.
const maxCleanedConfigBytes = 1 << 20

// cleanedConfigFile is the artifact the worker runtime writes for every
// step (worker.CleanedConfigFile).
const cleanedConfigFile = "cleaned_config.json"

// statusReserve is the disk space Prepare sets aside, as status.json.tmp,
// for Collect's status.json: a worker that fills the disk with its
// artifacts or logs cannot take the space status.json needs.
const statusReserve = 1 << 20

// ArtifactPolicy says which artifacts the host fetches. Every artifact
// counts against the caps, cleaned_config.json too; a step's
// cleaned_config.json is fetched whatever the include patterns and
// MaxFileBytes, up to a cap of its own of 1 MiB. What the policy refuses
// is reported in artifact_skipped events and counted in status.json.
type ArtifactPolicy struct {
	// Include are path.Match patterns matched against an artifact's path
	// and, for patterns without '/', its base name: "*.csv",
	// "reports/*". Empty means every artifact.
	Include []string
	// MaxFileBytes skips a larger file; DefaultMaxArtifactFileBytes when
	// zero. It is also sent to the worker, which then neither lists nor
	// hashes a larger file.
	MaxFileBytes int64
	// MaxTotalBytes skips files once a session has fetched this many
	// bytes; DefaultMaxArtifactTotalBytes when zero.
	MaxTotalBytes int64
	// MaxFiles skips files once a session has fetched this many;
	// DefaultMaxArtifactFiles when zero. It is also sent to the worker,
	// which then lists at most this many files per step.
	MaxFiles int
}

// RunSpec describes one run of a manifest.
type RunSpec struct {
	// SessionID names the session; a fresh "run_<time>_<random>" id when
	// empty.
	SessionID string
	// Dir is the session directory, created if needed; it must be empty.
	// Prepare claims it atomically: of runs racing for one directory,
	// exactly one gets it, the others fail with ErrSessionDirUsed.
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
	// MaxLogBytes caps events.jsonl and metrics.jsonl together;
	// DefaultMaxLogBytes when zero. Reaching it cancels the step in
	// flight and fails the run with a *LimitError; status.json is still
	// written.
	MaxLogBytes int64
	// LogCap caps logs.jsonl, which holds the worker's log records (at
	// LogLevel and above) and the host's own: records past it are dropped
	// and counted in Status.LogsDropped, and the run goes on.
	// logsink.DefaultLogCap (64 MiB) when zero; no cap when negative.
	LogCap int64
	// Timeout bounds the whole session, from the start of Prepare to the
	// end of Execute; zero means no bound beyond the caller's context.
	// When it passes, the step in flight is cancelled in the worker and
	// the run fails with FailureTimeout; Collect still runs.
	Timeout time.Duration
	// CollectGrace is how long Collect may run past the caller's
	// deadline (the context's or Timeout's, whichever comes first), or
	// past its own start once the run has failed or the context has
	// ended: the cleanup call waits that long for a worker still busy
	// with a step; then the worker is killed if its transport can
	// (transport.Killer), or left to the transport's shutdown ladder.
	// DefaultCollectGrace when zero.
	CollectGrace time.Duration
	// ContinueOnError runs the steps that do not depend on a failed step
	// instead of stopping at the first failure.
	ContinueOnError bool
	// CancelGrace is how long a step that reached its own Timeout has to
	// stop once the worker is told to cancel it. A driver that ignores the
	// cancel for longer is stuck: the host kills the worker, the step ends
	// as a timeout with a note saying so, and the run fails.
	// DefaultCancelGrace when zero.
	CancelGrace time.Duration
	// OnStep, if set, is called when each attempt of a step starts
	// (Status StepRunning) and when the step has ended (its last attempt,
	// or skipped), with a copy of the step's status, from the goroutine
	// running Execute. It must not block for long: the run waits for it.
	OnStep func(StepStatus)
	// LogLevel is the lowest level of driver log records the worker sends:
	// debug, info, warn or error (any case); empty means info. Another
	// value fails Prepare before the worker starts.
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
//
// The phases run once each, in that order; Collect may follow any of
// them, or come alone. A call out of order, or while another phase is
// running, is refused with an error matching ErrRunState and changes
// nothing. A Run's methods may be called from any goroutine. The errors
// they return have the session's secrets masked, in their text and in
// every field errors.As reaches.
type Run struct {
	t      transport.Transport
	spec   RunSpec
	masker *mask.Masker
	order  []tproxy.StepSpec
	files  *logsink.Files
	sink   logsink.Sink

	mu     sync.Mutex // guards the fields up to limit
	phase  runPhase   // the last phase begun
	busy   string     // the phase running, "" when none
	client *Client
	stop   context.CancelCauseFunc // cancels the phase running
	limit  *LimitError             // the cap a worker made the host reach
	// overrun is when the work done past the caller's deadline must end:
	// CollectGrace after the run first needed it. Zero until then.
	overrun time.Time

	ends    stepEnds          // the worker's step_complete and step_failed records
	refused atomic.Int64      // the files the worker's artifact_refused events stand for
	proc    transport.Process // the worker, once started, even if its handshake failed

	// Owned by the phase running.
	status   Status
	err      error // the run's first failure
	prepared bool  // the worker's session is open
	ownDir   bool  // this run claimed the session directory
	start    time.Time
	artBytes int64
	deadline time.Time // from RunSpec.Timeout; zero when none
}

// runPhase is how far a Run has gone.
type runPhase int

const (
	phaseNew runPhase = iota
	phasePrepared
	phaseExecuted
	phaseCollected
)

// when says where a refused call came, for ErrRunState's message.
func (p runPhase) when() string {
	return [...]string{"before Prepare", "after Prepare", "after Execute", "after Collect"}[p]
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
	a := &spec.Artifacts
	a.MaxFileBytes = cmp.Or(a.MaxFileBytes, DefaultMaxArtifactFileBytes)
	a.MaxTotalBytes = cmp.Or(a.MaxTotalBytes, DefaultMaxArtifactTotalBytes)
	a.MaxFiles = cmp.Or(a.MaxFiles, DefaultMaxArtifactFiles)
	spec.MaxLogBytes = cmp.Or(spec.MaxLogBytes, DefaultMaxLogBytes)
	spec.CollectGrace = cmp.Or(spec.CollectGrace, DefaultCollectGrace)
	spec.CancelGrace = cmp.Or(spec.CancelGrace, DefaultCancelGrace)
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
// *tproxy.ManifestError, an error wrapping *transport.ExitError, ...) with
// the session's secrets masked.
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
func (r *Run) Client() *Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.client
}

// begin starts phase name if the Run is in one of the states from and no
// phase is running.
func (r *Run) begin(name string, from ...runPhase) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.busy != "" {
		return fmt.Errorf("%w: %s while %s is running", ErrRunState, name, r.busy)
	}
	if !slices.Contains(from, r.phase) {
		return fmt.Errorf("%w: %s %s", ErrRunState, name, r.phase.when())
	}
	r.busy = name
	return nil
}

// end ends the phase running, leaving the Run in state p.
func (r *Run) end(p runPhase) {
	r.mu.Lock()
	r.busy, r.phase = "", p
	r.mu.Unlock()
}

// Prepare claims the session directory, writes the first status.json
// (outcome "running") and manifest.json, opens the log files, validates
// the manifest, starts the worker, checks that it has every driver the
// manifest names, and opens the session in it.
func (r *Run) Prepare(ctx context.Context) error {
	if err := r.begin("Prepare", phaseNew); err != nil {
		return err
	}
	defer r.end(phasePrepared)
	r.start = time.Now()
	r.status.StartedAt = r.start.UTC()
	if r.spec.Timeout > 0 {
		r.deadline = r.start.Add(r.spec.Timeout)
	}
	ctx, cancel := r.phaseContext(ctx)
	defer cancel()
	err := r.cause(ctx, r.prepare(ctx))
	r.status.Phases.PrepareMS = msSince(r.start)
	if err != nil {
		return r.maskErr(r.fail("", err))
	}
	r.event(ctx, tproxy.EventPhaseComplete, "", map[string]any{"phase": "prepare", "duration_ms": r.status.Phases.PrepareMS})
	return nil
}

func (r *Run) prepare(ctx context.Context) error {
	if r.t == nil {
		return errors.New("tproxy/host: Run has no transport")
	}
	if err := check.ID("session id", r.spec.SessionID); err != nil {
		return fmt.Errorf("tproxy/host: %w", err)
	}
	m, err := mask.NewMasker(r.spec.Secrets)
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

	if err := claimSessionDir(r.spec.Dir); err != nil {
		return err
	}
	r.ownDir = true
	// status.json says "running" from now on, and the space for its final
	// version is set aside before the worker can fill the disk.
	first := r.status
	first.Outcome = OutcomeRunning
	if err := r.writeStatus(&first); err != nil {
		return err
	}
	reserveStatus(r.spec.Dir)
	if err := writeJSON(filepath.Join(r.spec.Dir, ManifestFile), masked); err != nil {
		return err
	}
	files, err := openLogs(r.spec.Dir, r.spec.SessionID, logsink.WithMaxBytes(r.spec.MaxLogBytes), logsink.WithLogCap(r.spec.LogCap))
	if err != nil {
		return err
	}
	r.files = files
	var sink logsink.Sink = files
	if r.spec.Sink != nil {
		sink = logsink.Multi(files, r.spec.Sink)
	}
	// Always, even with no secret value known: a value under a secret key
	// is masked whatever it is. Events with nothing to mask keep the raw
	// fast path.
	sink = mask.Sink(sink, m)
	r.sink = capGuard(sink, r.hitLimit, &r.ends, &r.refused)
	r.event(ctx, tproxy.EventRunStart, "", map[string]any{"session_id": r.spec.SessionID, "steps_total": len(r.spec.Manifest.Steps)})

	order, err := r.spec.Manifest.Order()
	if err != nil {
		return err
	}
	r.order = order
	// Refused here, before a worker starts, rather than by its prepare.
	if _, err := check.LogLevel(r.spec.LogLevel); err != nil {
		return fmt.Errorf("tproxy/host: RunSpec.LogLevel: %w", err)
	}

	// The host's own diagnostics go to logs.jsonl too, and to the
	// caller's logger with the session's id.
	var cfg config
	for _, o := range r.spec.Options {
		o(&cfg)
	}
	logger := cmp.Or(cfg.logger, slog.Default()).With("session_id", r.spec.SessionID)
	logger = slog.New(&teeHandler{next: logger.Handler(), sink: r.sink, m: m})
	opts := append(slices.Clone(r.spec.Options), WithSink(r.sink), WithLogger(logger), withStarted(func(p transport.Process) { r.proc = p }))
	c, err := Start(ctx, r.t, opts...)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.client = c
	r.mu.Unlock()
	info := c.Worker().Worker
	r.status.Worker = &info
	for _, st := range order {
		if !slices.Contains(info.Drivers, st.Driver) {
			return &tproxy.ManifestError{StepID: st.ID, Reason: fmt.Sprintf("no driver %q in worker %s %s (it has: %v)", st.Driver, info.Name, info.Version, info.Drivers)}
		}
	}
	secrets := r.spec.Secrets
	limits := tproxy.ArtifactLimits{MaxFiles: int64(r.spec.Artifacts.MaxFiles), MaxFileBytes: r.spec.Artifacts.MaxFileBytes}
	if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: r.spec.SessionID, Manifest: r.spec.Manifest,
		Config: r.spec.Config, LogLevel: r.spec.LogLevel, Secrets: &secrets, ArtifactLimits: &limits}); err != nil {
		return err
	}
	r.prepared = true
	return nil
}

// Execute runs the steps in dependency order, wiring each step's inputs to
// outputs kept in the worker, and fetches each step's artifacts when it
// ends. It stops at the first failed step unless ContinueOnError is set,
// in which case only the steps that depend on a failed step are skipped.
// After a failed Prepare it returns Prepare's error and runs nothing.
func (r *Run) Execute(ctx context.Context) error {
	if err := r.begin("Execute", phasePrepared); err != nil {
		return err
	}
	if !r.prepared {
		r.end(phasePrepared)
		return r.maskErr(r.err)
	}
	defer r.end(phaseExecuted)
	start := time.Now()
	defer func() { r.status.Phases.ExecuteMS = msSince(start) }()
	ctx, cancel := r.phaseContext(ctx)
	defer cancel()
	failed := map[string]bool{}
	for _, st := range r.order {
		if slices.ContainsFunc(st.Needs, func(n string) bool { return failed[n] }) {
			failed[st.ID] = true
			r.stepChanged(st.ID, func(s *StepStatus) { s.Status = StepSkipped })
			r.event(ctx, tproxy.EventStepSkipped, st.ID, map[string]any{"reason": "a step it needs failed"})
			continue
		}
		if err := r.cause(ctx, r.runStep(ctx, st)); err != nil {
			failed[st.ID] = true
			r.fail(st.ID, err)
			if !r.spec.ContinueOnError || ctx.Err() != nil || !isStepFailure(err) {
				break
			}
		}
	}
	if r.err == nil {
		r.event(ctx, tproxy.EventPhaseComplete, "", map[string]any{"phase": "execute", "duration_ms": msSince(start)})
	}
	return r.maskErr(r.err)
}

// isStepFailure reports whether err failed only its step, leaving the
// worker able to run the next one.
func isStepFailure(err error) bool {
	var (
		te *StepTimeoutError
		se *StepError
	)
	if errors.As(err, &te) {
		return !te.Stuck
	}
	return errors.As(err, &se) && se.ErrorType != "cancelled"
}

// fetchArtifacts copies the step's artifacts that the policy admits into
// artifacts/<step id>/ of the session directory.
func (r *Run) fetchArtifacts(ctx context.Context, stepID string, arts []tproxy.Artifact) error {
	if len(arts) == 0 {
		return nil
	}
	dir := filepath.Join(r.spec.Dir, ArtifactsDir, stepID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return &ArtifactError{StepID: stepID, Path: ".", Reason: "creating the step's artifact directory", Err: err}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return &ArtifactError{StepID: stepID, Path: ".", Reason: "opening the step's artifact directory", Err: err}
	}
	defer root.Close()
	// Past the count cap, one event says how many more were skipped:
	// the worker chose how many it listed.
	var over []tproxy.Artifact
	for _, a := range arts {
		if err := check.ArtifactPath(a.Path); err != nil {
			return &ArtifactError{StepID: stepID, Path: a.Path, Reason: "refused", Err: err}
		}
		if a.Size < 0 {
			return &ArtifactError{StepID: stepID, Path: a.Path, Reason: fmt.Sprintf("refused: the worker listed a negative size, %d bytes", a.Size)}
		}
		if r.status.Artifacts.Files >= r.spec.Artifacts.MaxFiles {
			over = append(over, a)
			continue
		}
		if skip := r.skipReason(a); skip != "" {
			r.status.Artifacts.Skipped++
			r.event(ctx, tproxy.EventArtifactSkipped, stepID, map[string]any{"path": a.Path, "size": a.Size, "reason": skip})
			continue
		}
		if err := r.fetchOne(ctx, root, stepID, a); err != nil {
			return err
		}
		r.artBytes += a.Size
		r.status.Artifacts.Files++
		r.status.Artifacts.Bytes += a.Size
		r.setStep(stepID, func(s *StepStatus) {
			s.Artifacts = slices.DeleteFunc(s.Artifacts, func(b tproxy.Artifact) bool { return b.Path == a.Path })
			s.Artifacts = append(s.Artifacts, a)
		})
	}
	if len(over) > 0 {
		r.status.Artifacts.Skipped += len(over)
		r.event(ctx, tproxy.EventArtifactSkipped, stepID, map[string]any{"path": over[0].Path, "size": over[0].Size, "count": len(over),
			"reason": fmt.Sprintf("the session's cap of %d artifacts is reached: this one and %d more are skipped", r.spec.Artifacts.MaxFiles, len(over)-1)})
	}
	return nil
}

func (r *Run) skipReason(a tproxy.Artifact) string {
	p := r.spec.Artifacts
	maxFile := p.MaxFileBytes
	cleaned := a.Path == cleanedConfigFile
	if cleaned {
		maxFile = maxCleanedConfigBytes
	}
	switch {
	case a.Size > maxFile:
		return fmt.Sprintf("%d bytes is over the per-file cap of %d", a.Size, maxFile)
	case a.Size > p.MaxTotalBytes-r.artBytes: // not r.artBytes+a.Size: that can overflow
		return fmt.Sprintf("the session's artifacts would exceed the cap of %d bytes", p.MaxTotalBytes)
	case cleaned || len(p.Include) == 0:
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
			return &ArtifactError{StepID: stepID, Path: a.Path, Reason: "refused: creating its directory", Err: err}
		}
	}
	f, err := root.OpenFile(a.Path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return &ArtifactError{StepID: stepID, Path: a.Path, Reason: "refused: creating the file", Err: err}
	}
	w := &artifactWriter{f: f}
	err = r.client.FetchArtifact(ctx, stepID, a, w)
	cerr := f.Close()
	switch {
	case w.err != nil:
		// The host's disk, not the worker: say so, with the cause.
		err = &ArtifactError{StepID: stepID, Path: a.Path, Reason: "writing the file", Err: w.err}
	case err == nil && cerr != nil:
		err = &ArtifactError{StepID: stepID, Path: a.Path, Reason: "writing the file", Err: cerr}
	}
	if err != nil {
		root.Remove(a.Path) // never leave bytes that failed verification
	}
	return err
}

// artifactWriter keeps the first error writing an artifact's file, so
// that a full disk is reported as such.
type artifactWriter struct {
	f   *os.File
	err error
}

func (w *artifactWriter) Write(p []byte) (int, error) {
	n, err := writeArtifact(w.f, p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// Collect ends the run: it cleans up the worker's session, stops the
// worker, records the artifact metrics and the final event, closes the log
// files and writes status.json. It may be called after any phase, or
// alone; it returns the status and the run's first error, and later calls
// return the same. Called while another phase runs, it returns a nil
// status and an error matching ErrRunState.
//
// It runs even when ctx has ended, and returns at most
// RunSpec.CollectGrace after the caller's deadline, or after it was
// called once the run has failed or ctx has ended (plus the time to kill
// the worker when the transport has a transport.Killer): a worker still
// busy with a step that ignores its cancellation is killed, not waited
// for.
func (r *Run) Collect(ctx context.Context) (*Status, error) {
	r.mu.Lock()
	switch {
	case r.busy != "":
		busy := r.busy
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: Collect while %s is running", ErrRunState, busy)
	case r.phase == phaseCollected:
		st := r.status
		r.mu.Unlock()
		return &st, r.maskErr(r.err)
	}
	r.busy = "Collect"
	r.mu.Unlock()
	defer r.end(phaseCollected)

	if r.start.IsZero() {
		r.start = time.Now()
		r.status.StartedAt = r.start.UTC()
	}
	start := time.Now()
	cctx, cancel := r.collectContext(ctx)
	defer cancel()

	if r.client != nil {
		if r.prepared && r.alive() {
			if _, err := r.client.Cleanup(cctx); err != nil {
				r.fail("", err)
			}
		}
		if err := r.closeClient(cctx); err != nil {
			r.fail("", err)
		}
		exit := r.client.Process().Exit()
		exit.Reason = r.masker.String(exit.Reason)
		r.status.Exit = &exit
		// Excerpt: the tail may begin in the middle of a secret.
		r.status.StderrTail = r.masker.Excerpt(string(r.client.Process().StderrTail()))
		r.status.Protocol = r.client.ProtocolCounts()
		r.status.Transport = transportInfo(r.client.Process())
	} else if r.proc != nil {
		// The worker started but the handshake failed; Start has stopped
		// it, and its exit is known, unless a transport's ladder left it
		// ending: wait for that only within Collect's deadline.
		select {
		case <-r.proc.Done():
		case <-cctx.Done():
		}
		exit := r.proc.Exit()
		exit.Reason = r.masker.String(exit.Reason)
		r.status.Exit = &exit
		r.status.StderrTail = r.masker.Excerpt(string(r.proc.StderrTail()))
		r.status.Transport = transportInfo(r.proc)
	}
	r.lateEnds()
	r.status.Phases.CollectMS = msSince(start)
	r.status.FinishedAt = time.Now().UTC()
	r.status.DurationMS = msSince(r.start)
	if r.err == nil {
		r.status.Outcome = OutcomeSuccess
	}
	if r.sink != nil {
		now := time.Now().UTC()
		r.sink.Metric(cctx, tproxy.Metric{Name: tproxy.MetricArtifactsFiles, Value: float64(r.status.Artifacts.Files), Timestamp: now})
		r.sink.Metric(cctx, tproxy.Metric{Name: tproxy.MetricArtifactsBytes, Value: float64(r.status.Artifacts.Bytes), Timestamp: now, Unit: "bytes"})
		r.event(cctx, tproxy.EventPhaseComplete, "", map[string]any{"phase": "collect", "duration_ms": r.status.Phases.CollectMS})
		if r.err == nil {
			r.event(cctx, tproxy.EventRunComplete, "", map[string]any{"steps_completed": r.status.StepsCompleted,
				"steps_total": r.status.StepsTotal, "duration_ms": r.status.DurationMS})
		} else {
			f := r.status.Failure
			data := map[string]any{"outcome": r.status.Outcome, "kind": f.Kind, "reason": f.Reason,
				"steps_completed": r.status.StepsCompleted, "steps_total": r.status.StepsTotal, "duration_ms": r.status.DurationMS}
			r.event(cctx, tproxy.EventRunFailed, f.StepID, data)
		}
	}
	r.status.Artifacts.Refused = r.refused.Load()
	if r.files != nil {
		r.status.LogsDropped = r.files.LogsDropped()
		if err := r.files.Close(); err != nil {
			r.fail("", &SinkError{Op: "closing the session's log files", Err: err})
			r.status.Outcome = OutcomeFailed
		}
	}
	st := r.status
	if err := r.writeStatus(&r.status); err != nil {
		r.err = errors.Join(r.err, err)
	}
	return &st, r.maskErr(r.err)
}

// collectContext returns the context Collect's calls use: ctx's values
// without its cancellation, ending CollectGrace after the caller's
// deadline. That is now when the run has failed or ctx has ended;
// otherwise the session's deadline, if any, or the moment ctx ends.
func (r *Run) collectContext(ctx context.Context) (context.Context, context.CancelFunc) {
	grace := r.spec.CollectGrace
	base := context.WithoutCancel(ctx)
	if ctx.Err() != nil || r.err != nil {
		return r.overrunContext(ctx)
	}
	var cancel context.CancelFunc
	if !r.deadline.IsZero() {
		base, cancel = context.WithDeadline(base, r.deadline.Add(grace))
	} else {
		base, cancel = context.WithCancel(base)
	}
	// ctx's deadline passing, or the caller cancelling, starts the grace.
	var (
		mu    sync.Mutex
		timer *time.Timer
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		timer = time.AfterFunc(grace, cancel)
		mu.Unlock()
	})
	return base, func() {
		stop()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// closeClient closes the connection and the worker. Once ctx ends the
// worker is killed if its transport can (transport.Killer): the
// transport's shutdown ladder would otherwise take its course, seconds
// past the caller's deadline for a worker that ignores its stdin closing.
func (r *Run) closeClient(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- r.client.Close() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	if k, ok := r.client.Process().(transport.Killer); ok {
		k.Kill()
	}
	return <-done
}

// transportInfo returns what p's transport tells of it, once it has
// ended (its TransportInfo method), or nil.
func transportInfo(p transport.Process) any {
	if ti, ok := p.(interface{ TransportInfo() any }); ok {
		return ti.TransportInfo()
	}
	return nil
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
// err, as a *LimitError if it comes from a cap the worker made the host
// reach.
func (r *Run) fail(stepID string, err error) error {
	err = r.asLimit(err)
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
		f.ErrorType = r.masker.String(se.ErrorType)
	}
	r.status.Failure = f
	return err
}

// maskErr masks the session's secrets in err, whose text and fields may
// quote the worker.
func (r *Run) maskErr(err error) error { return maskError(r.masker, err) }

// phaseContext bounds ctx by the session's deadline, if it has one, and
// lets a cap the worker makes the host reach cancel the phase.
func (r *Run) phaseContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancelTimeout := r.sessionContext(ctx)
	ctx, stop := context.WithCancelCause(ctx)
	r.mu.Lock()
	r.stop = stop
	if r.limit != nil {
		stop(r.limit)
	}
	r.mu.Unlock()
	return ctx, func() {
		r.mu.Lock()
		r.stop = nil
		r.mu.Unlock()
		stop(nil)
		cancelTimeout()
	}
}

// hitLimit records that the session's sink refused a record for its byte
// cap (err), and cancels the phase running: the worker's step is
// cancelled rather than left streaming into a sink that drops everything.
// It is called by the connection's read loop.
func (r *Run) hitLimit(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.limit != nil {
		return
	}
	r.limit = &LimitError{Limit: limitLogBytes, Max: r.spec.MaxLogBytes, Err: err}
	if r.stop != nil {
		r.stop(r.limit)
	}
}

// asLimit returns err as the *LimitError of the cap it comes from, if it
// comes from one.
func (r *Run) asLimit(err error) error {
	var le *LimitError
	if err == nil || errors.As(err, &le) || !errors.Is(err, logsink.ErrMaxBytes) {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.limit == nil {
		r.limit = &LimitError{Limit: limitLogBytes, Max: r.spec.MaxLogBytes, Err: err}
	}
	return r.limit
}

// cause explains an error that ctx's end caused, when ctx's cause says
// more than the context's own error: the session's timeout, or a cap
// reached, which replaces the error of the call it cut short.
func (r *Run) cause(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	var le *LimitError
	if errors.As(context.Cause(ctx), &le) {
		return le
	}
	return withCause(ctx, err)
}

// stepChanged applies f to step id's status and tells RunSpec.OnStep.
func (r *Run) stepChanged(id string, f func(*StepStatus)) {
	r.setStep(id, func(s *StepStatus) {
		f(s)
		if r.spec.OnStep != nil {
			c := *s
			c.Attempts = slices.Clone(s.Attempts)
			c.Artifacts = slices.Clone(s.Artifacts)
			r.spec.OnStep(c)
		}
	})
}

// setStep applies f to step id's status.
func (r *Run) setStep(id string, f func(*StepStatus)) {
	for i := range r.status.Steps {
		if r.status.Steps[i].ID == id {
			f(&r.status.Steps[i])
			return
		}
	}
}

// overrunContext returns ctx's values without its cancellation, ending
// at the run's overrun deadline: CollectGrace after the first call. Work
// done past the caller's deadline (a cancelled step's answer and
// artifacts, Collect) shares that one grace.
func (r *Run) overrunContext(ctx context.Context) (context.Context, context.CancelFunc) {
	r.mu.Lock()
	if r.overrun.IsZero() {
		r.overrun = time.Now().Add(r.spec.CollectGrace)
	}
	d := r.overrun
	r.mu.Unlock()
	return context.WithDeadline(context.WithoutCancel(ctx), d)
}

// lateEnds records the lifecycle events that came after their attempt
// was recorded (a step cancelled with the run, whose answer the run did
// not wait for): the last attempt of the step takes their duration and
// error type.
func (r *Run) lateEnds() {
	for i := range r.status.Steps {
		s := &r.status.Steps[i]
		end, ok := r.ends.take(s.ID)
		if !ok || len(s.Attempts) == 0 {
			continue
		}
		a := &s.Attempts[len(s.Attempts)-1]
		a.DurationMS, s.DurationMS = end.durationMS, end.durationMS
		if et := r.masker.String(end.errorType); et != "" && a.Status != StepComplete {
			a.ErrorType, s.ErrorType = et, et
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

// capGuard returns next, calling hit with the first error next returns
// for its byte cap (logsink.ErrMaxBytes). It keeps next's raw-event
// entry point (wire.RawOf).
func capGuard(next logsink.Sink, hit func(error), ends *stepEnds, refused *atomic.Int64) logsink.Sink {
	g := &guard{next: next, hit: hit, ends: ends, refused: refused}
	if raw, ok := wire.RawOf(next); ok {
		return &rawGuard{guard: g, raw: raw}
	}
	return g
}

type guard struct {
	next    logsink.Sink
	hit     func(error)
	once    sync.Once
	ends    *stepEnds     // where the worker's step end records go
	refused *atomic.Int64 // the files the worker's artifact_refused events stand for
}

func (g *guard) check(err error) error {
	if err != nil && errors.Is(err, logsink.ErrMaxBytes) {
		g.once.Do(func() { g.hit(err) })
	}
	return err
}

func (g *guard) Event(ctx context.Context, e tproxy.Event) error {
	g.note(e)
	return g.check(g.next.Event(ctx, e))
}

// note records what status.json takes from a worker's event: how a step
// attempt ended, and the files its artifact listing left out.
func (g *guard) note(e tproxy.Event) {
	switch {
	case isStepEnd(e.Name, e.Source):
		g.noteEnd(e)
	case e.Name == tproxy.EventArtifactRefused && e.Source != tproxy.SourceHost:
		n, _ := e.Data["count"].(float64)
		g.refused.Add(max(int64(n), 1))
	}
}

// noteEnd records what a worker's step_complete or step_failed event says
// of how the step's attempt ended.
func (g *guard) noteEnd(e tproxy.Event) {
	end := stepEnd{}
	end.errorType, _ = e.Data["error_type"].(string)
	end.durationMS, _ = e.Data["duration_ms"].(float64)
	g.ends.put(e.StepID, end)
}

// isStepEnd reports whether an event is a worker's record of how a step
// attempt ended.
func isStepEnd(name, source string) bool {
	return (name == tproxy.EventStepComplete || name == tproxy.EventStepFailed) && source != tproxy.SourceHost
}

func (g *guard) Metric(ctx context.Context, m tproxy.Metric) error {
	return g.check(g.next.Metric(ctx, m))
}

func (g *guard) Log(ctx context.Context, r tproxy.LogRecord) error {
	return g.check(g.next.Log(ctx, r))
}

func (g *guard) Flush() error { return g.check(g.next.Flush()) }

type rawGuard struct {
	*guard
	raw wire.RawFunc
}

func (g *rawGuard) EventRaw(ctx context.Context, e *wire.RawEvent) error {
	if isStepEnd(e.Name, e.Source) || e.Name == tproxy.EventArtifactRefused {
		// A few events per step: decoding them costs nothing that
		// matters, and each is read in one place.
		if ev, err := e.Event(); err == nil {
			g.note(ev)
		}
	}
	return g.check(g.raw(ctx, e))
}

// writeStatus writes st to status.json (see writeStatusFile).
func (r *Run) writeStatus(st *Status) error {
	if !r.ownDir {
		return fmt.Errorf("tproxy/host: no %s written: the run never had its session directory %s", StatusFile, r.spec.Dir)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("tproxy/host: encoding %s: %w", StatusFile, err)
	}
	if err := writeStatusFile(r.spec.Dir, append(b, '\n')); err != nil {
		return fmt.Errorf("tproxy/host: writing %s: %w", StatusFile, err)
	}
	return nil
}

// claimSessionDir makes dir the session directory of one run: it creates
// dir, or takes an existing empty one, and creates status.json in it with
// O_EXCL. Of runs racing for one directory exactly one creates
// status.json; the others find the directory not empty, or the file
// there, and fail with ErrSessionDirUsed.
func claimSessionDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("tproxy/host: creating the session directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("tproxy/host: creating the session directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("tproxy/host: reading the session directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w (%s holds %s)", ErrSessionDirUsed, dir, entries[0].Name())
	}
	f, err := openFile(filepath.Join(dir, StatusFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w (another run claimed %s at the same moment)", ErrSessionDirUsed, dir)
	}
	if err != nil {
		return fmt.Errorf("tproxy/host: claiming the session directory: %w", err)
	}
	return f.Close()
}

// Seams for the tests, which fill the disk: how the session's log files
// are opened, how an artifact's bytes are written.
var (
	openLogs      = logsink.OpenDir
	writeArtifact = (*os.File).Write
)

// openFile opens the files of status.json; tests replace it to fill the
// disk.
var openFile = func(name string, flag int, perm os.FileMode) (statusFile, error) {
	return os.OpenFile(name, flag, perm)
}

// statusFile is what writing status.json needs of an *os.File.
type statusFile interface {
	WriteAt(b []byte, off int64) (int, error)
	Truncate(size int64) error
	Close() error
}

// reserveStatus sets statusReserve bytes of disk aside as status.json.tmp,
// which writeStatusFile then writes over. Without the reserve (a disk
// already full), status.json is still written, only less surely.
func reserveStatus(dir string) {
	tmp := filepath.Join(dir, StatusFile+".tmp")
	f, err := openFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return
	}
	zeros := make([]byte, 64<<10)
	for off := int64(0); off < statusReserve && err == nil; off += int64(len(zeros)) {
		_, err = f.WriteAt(zeros, off)
	}
	if cerr := f.Close(); err != nil || cerr != nil {
		os.Remove(tmp)
	}
}

// writeStatusFile replaces dir's status.json by b so that a full disk
// does not lose it: b is written over status.json.tmp (the reserve Prepare
// set aside, whose blocks are reused rather than allocated), which is cut
// to b's length and renamed over status.json; should that fail, b is
// written over status.json itself, in place, as a last resort. No
// status.json.tmp is left behind.
func writeStatusFile(dir string, b []byte) error {
	name := filepath.Join(dir, StatusFile)
	tmp := name + ".tmp"
	err := overwrite(tmp, b, os.O_CREATE)
	if err == nil {
		if err = os.Rename(tmp, name); err == nil {
			return nil
		}
	}
	os.Remove(tmp) // frees the reserve for the last resort, too
	if err2 := overwrite(name, b, 0); err2 != nil {
		return errors.Join(err, err2)
	}
	return nil
}

// overwrite writes b at the start of the file name and cuts the file to
// len(b): the blocks the file has are written over, so no free space is
// needed unless b is longer than the file.
func overwrite(name string, b []byte, flag int) error {
	f, err := openFile(name, os.O_WRONLY|flag, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Truncate(int64(len(b)))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeJSON writes v to path atomically: a crash leaves the old file or the
// new one, never half of one, and a failure leaves no temporary file.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("tproxy/host: encoding %s: %w", filepath.Base(path), err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		os.Remove(tmp)
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
