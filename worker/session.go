package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/check"
	"github.com/tproxy/tproxy/internal/mask"
	"github.com/tproxy/tproxy/logsink"
)

// session is the state one worker keeps across calls: the host's session,
// never a session of its own.
type session struct {
	id       string
	prepared bool // prepare succeeded and cleanup has not run
	cleaned  bool
	dir      string
	manifest tproxy.Manifest
	config   map[string]any
	level    slog.Level
	masker   *mask.Masker // nil until prepare

	attempts  int // exec_step calls that reached a driver
	executed  int // steps that succeeded
	totalRows int64
	outputs   map[string]map[string]any // step id → output key → value
	limits    tproxy.ArtifactLimits     // the host's caps on a step's listing
}

func (ss *session) removeDir(log *slog.Logger) {
	if ss.dir == "" {
		return
	}
	if err := os.RemoveAll(ss.dir); err != nil {
		log.Warn("tproxy/worker: removing the session directory failed", "dir", ss.dir, "err", err)
	}
	ss.dir = ""
}

func (s *server) prepare(ctx context.Context, raw json.RawMessage) (*tproxy.PrepareResult, error) {
	var p tproxy.PrepareParams
	if err := decodeParams(tproxy.MethodPrepare, raw, &p, "session_id", "manifest"); err != nil {
		return nil, err
	}
	if p.Manifest.Steps == nil {
		return nil, invalidParams(tproxy.MethodPrepare, errors.New(`the manifest has no "steps" member`))
	}
	if err := check.ID("session id", p.SessionID); err != nil {
		return nil, invalidParams(tproxy.MethodPrepare, err)
	}
	ss := &s.sess
	if ss.id != "" && ss.id != p.SessionID {
		return nil, &jsonrpc2.Error{Code: tproxy.CodeSessionMismatch,
			Message: fmt.Sprintf("this worker serves session %q and cannot prepare session %q: one worker, one session", ss.id, p.SessionID)}
	}
	drivers, err := s.checkManifest(p.Manifest)
	if err != nil {
		return nil, err
	}
	var secrets tproxy.Secrets
	if p.Secrets != nil {
		secrets = *p.Secrets
	}
	masker, err := mask.NewMasker(secrets)
	if err != nil {
		return nil, invalidParams(tproxy.MethodPrepare, err)
	}
	// Learn every secret the session will see before anything is sent.
	masker.Learn(p.Config)
	for _, st := range p.Manifest.Steps {
		masker.Learn(st.Config)
	}
	level, err := check.LogLevel(p.LogLevel)
	if err != nil {
		return nil, invalidParams(tproxy.MethodPrepare, err)
	}
	if err := s.checkConfigs(p.Manifest, masker); err != nil {
		return nil, err
	}
	if l := p.ArtifactLimits; l != nil && (l.MaxFiles < 0 || l.MaxFileBytes < 0) {
		return nil, invalidParams(tproxy.MethodPrepare, fmt.Errorf("artifact_limits: negative max_files %d or max_file_bytes %d", l.MaxFiles, l.MaxFileBytes))
	}
	if ss.dir == "" {
		dir, err := s.createDir(p.SessionID)
		if err != nil {
			return nil, &jsonrpc2.Error{Code: tproxy.CodeInternalError, Message: fmt.Sprintf("creating the session directory: %v", err)}
		}
		ss.dir = dir
	}
	ss.id, ss.prepared, ss.cleaned = p.SessionID, true, false
	ss.manifest, ss.config, ss.level, ss.masker = p.Manifest, p.Config, level, masker
	ss.limits = tproxy.ArtifactLimits{}
	if p.ArtifactLimits != nil {
		ss.limits = *p.ArtifactLimits
	}
	s.setMasker(masker)
	if ss.outputs == nil {
		ss.outputs = map[string]map[string]any{}
	}

	sink := s.sink()
	now := time.Now().UTC()
	sink.Event(ctx, tproxy.Event{Name: tproxy.EventSessionInitialized, Timestamp: now,
		Data: dataOf(tproxy.SessionInitializedData{SessionID: p.SessionID, StepsTotal: len(p.Manifest.Steps)})})
	sink.Metric(ctx, tproxy.Metric{Name: tproxy.MetricStepsTotal, Value: float64(len(p.Manifest.Steps)), Timestamp: now})

	return &tproxy.PrepareResult{Status: "ready", SessionID: ss.id, SessionDir: ss.dir, DriversLoaded: drivers}, nil
}

// checkManifest refuses a manifest this worker cannot run and returns the
// drivers it uses.
func (s *server) checkManifest(m tproxy.Manifest) ([]string, error) {
	seen := map[string]bool{}
	var drivers []string
	for i, st := range m.Steps {
		if err := checkStep(tproxy.MethodPrepare, fmt.Sprintf("manifest step %d", i), st.ID, st.Driver, st.Inputs); err != nil {
			return nil, err
		}
		if seen[st.ID] {
			return nil, invalidParams(tproxy.MethodPrepare, fmt.Errorf("manifest step id %q appears twice", st.ID))
		}
		seen[st.ID] = true
		if _, ok := s.w.drivers[st.Driver]; !ok {
			return nil, unknownDriver(st.ID, st.Driver, s.w.Drivers())
		}
		if !slices.Contains(drivers, st.Driver) {
			drivers = append(drivers, st.Driver)
		}
	}
	sort.Strings(drivers)
	return drivers, nil
}

// checkConfigs checks the config of every step whose driver declared its
// config (Typed), in manifest order, so that a mistake in any step's
// config fails the session now rather than that step once the steps
// before it have run.
func (s *server) checkConfigs(m tproxy.Manifest, masker *mask.Masker) *jsonrpc2.Error {
	for _, st := range m.Steps {
		cc, ok := s.w.drivers[st.Driver].(configChecker)
		if !ok {
			continue
		}
		err := cc.checkConfig(st.ID, st.Config)
		if err == nil {
			continue
		}
		ce, ok := err.(*ConfigError)
		if !ok {
			ce = &ConfigError{StepID: st.ID, Reason: err.Error(), Err: err}
		}
		e := &jsonrpc2.Error{Code: tproxy.CodeInvalidConfig, Message: masker.String(ce.Error())}
		e.SetError(configFailure{StepID: st.ID, Field: ce.Field, Message: masker.String(ce.Reason)})
		return e
	}
	return nil
}

// configFailure is the data of a CodeInvalidConfig error
// (docs/protocol.md section 7).
type configFailure struct {
	StepID  string `json:"step_id"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func unknownDriver(stepID, driver string, have []string) *jsonrpc2.Error {
	return &jsonrpc2.Error{Code: tproxy.CodeUnknownDriver,
		Message: fmt.Sprintf("step %q: no driver %q in this worker (it has: %s)", stepID, driver, strings.Join(have, ", "))}
}

func (s *server) notPrepared(method string) *jsonrpc2.Error {
	msg := method + " before prepare"
	if s.sess.cleaned {
		msg = fmt.Sprintf("%s after cleanup of session %q", method, s.sess.id)
	}
	return &jsonrpc2.Error{Code: tproxy.CodeNotPrepared, Message: msg}
}

func (s *server) execStep(ctx context.Context, raw json.RawMessage) (*tproxy.ExecStepResult, error) {
	ss := &s.sess
	if !ss.prepared {
		return nil, s.notPrepared(tproxy.MethodExecStep)
	}
	var p tproxy.ExecStepParams
	if err := decodeParams(tproxy.MethodExecStep, raw, &p, "step_id", "driver"); err != nil {
		return nil, err
	}
	if err := checkStep(tproxy.MethodExecStep, "exec_step", p.StepID, p.Driver, p.Inputs); err != nil {
		return nil, err
	}
	d, ok := s.w.drivers[p.Driver]
	if !ok {
		return nil, unknownDriver(p.StepID, p.Driver, s.w.Drivers())
	}
	inputs, err := ss.resolve(p)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(ss.dir, p.StepID)  // created by Step.Dir
	artDir := artifactDir(ss.dir, p.StepID) // created by writeCleanedConfig
	cleaned := ss.masker.Config(p.Config)
	s.setMasker(ss.masker) // the step's config may have named new secrets
	if err := writeCleanedConfig(artDir, cleaned); err != nil {
		return nil, &jsonrpc2.Error{Code: tproxy.CodeInternalError, Message: fmt.Sprintf("step %q: writing %s: %v", p.StepID, CleanedConfigFile, err)}
	}

	ss.attempts++
	sink := s.sink()
	step := &Step{
		ctx: ctx, id: p.StepID, driver: p.Driver, number: ss.attempts,
		config: p.Config, inputs: inputs, sessionID: ss.id, sessionCfg: ss.config,
		dir: dir, artifactDir: artDir, sink: sink,
	}
	step.logger = slog.New(&logHandler{lane: s.lane, level: ss.level, stepID: p.StepID, mask: ss.masker})

	start := time.Now()
	sink.Event(ctx, tproxy.Event{Name: tproxy.EventStepStart, Timestamp: start.UTC(), StepID: p.StepID,
		Data: dataOf(tproxy.StepStartData{Driver: p.Driver, StepNumber: ss.attempts})})

	s.beatStep.Store(&p.StepID)
	runErr := s.runDriver(ctx, d, step)
	rows, outputs := step.finish()
	elapsed := time.Since(start)
	durMS := elapsed.Milliseconds()
	end := time.Now().UTC()

	// From here on, what the runtime sends goes out with the response.
	sink = mask.Sink(heldSink{s.lane}, ss.masker)
	artifacts := s.artifacts(ctx, sink, p.StepID, artDir)
	if runErr != nil {
		msg := ss.masker.String(runErr.Error())
		failure := tproxy.StepFailure{StepID: p.StepID, ErrorType: errorType(ctx, runErr), Message: msg, Artifacts: artifacts}
		sink.Event(ctx, tproxy.Event{Name: tproxy.EventStepFailed, Timestamp: end, StepID: p.StepID,
			Data: dataOf(tproxy.StepFailedData{Driver: p.Driver, ErrorType: failure.ErrorType, Message: failure.Message, DurationMS: float64(durMS)})})
		e := &jsonrpc2.Error{Code: tproxy.CodeStepFailed, Message: fmt.Sprintf("step %q failed: %s", p.StepID, msg)}
		e.SetError(failure)
		return nil, e
	}

	ss.executed++
	ss.totalRows += rows
	ss.outputs[p.StepID] = outputs
	if rows != 0 {
		sink.Metric(ctx, tproxy.Metric{Name: tproxy.MetricRowsProcessed, Value: float64(rows), Timestamp: end, StepID: p.StepID})
	}
	sink.Metric(ctx, tproxy.Metric{Name: tproxy.MetricStepDurationMS, Value: float64(durMS), Timestamp: end, StepID: p.StepID, Unit: "ms"})
	sink.Event(ctx, tproxy.Event{Name: tproxy.EventStepComplete, Timestamp: end, StepID: p.StepID,
		Data: dataOf(tproxy.StepCompleteData{Driver: p.Driver, RowsProcessed: rows, DurationMS: float64(durMS), Outputs: slices.Sorted(maps.Keys(outputs))})})

	res := &tproxy.ExecStepResult{Status: "complete", StepID: p.StepID, RowsProcessed: rows, DurationMS: float64(durMS), Artifacts: artifacts}
	if len(outputs) > 0 {
		res.Outputs = make(map[string]any, len(outputs))
		for k, v := range outputs {
			res.Outputs[k] = summarize(v)
		}
	}
	return res, nil
}

// resolve looks up the outputs a step's inputs name.
func (ss *session) resolve(p tproxy.ExecStepParams) (map[string]any, error) {
	if len(p.Inputs) == 0 {
		return nil, nil
	}
	in := make(map[string]any, len(p.Inputs))
	for name, ref := range p.Inputs {
		outs, ran := ss.outputs[ref.FromStep]
		v, ok := outs[ref.Key]
		if !ok {
			why := fmt.Sprintf("step %q has not run in session %q", ref.FromStep, ss.id)
			if ran {
				why = fmt.Sprintf("step %q kept no output %q (it kept: %s)", ref.FromStep, ref.Key, strings.Join(slices.Sorted(maps.Keys(outs)), ", "))
			}
			return nil, &jsonrpc2.Error{Code: tproxy.CodeInputUnavailable,
				Message: fmt.Sprintf("step %q: input %q: %s", p.StepID, name, why)}
		}
		in[name] = v
	}
	return in, nil
}

// runDriver runs d, turning a panic into the step's error. The stack goes
// to the worker's logger (stderr in a worker process), not over the wire.
func (s *server) runDriver(ctx context.Context, d Driver, step *Step) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("tproxy/worker: driver panicked", "step_id", step.id, "driver", step.driver,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = &panicError{value: p}
		}
	}()
	return d.Run(ctx, step)
}

// heartbeats sends a heartbeat every interval, naming the step in
// beatStep if any, until the returned stop is called. It runs on a timer,
// not a goroutine of its own. stop returns once no beat is being written,
// so that none follows what the caller writes next.
func (s *server) heartbeats(ctx context.Context) (stop func()) {
	interval := s.w.heartbeat()
	var (
		mu      sync.Mutex // held while a beat is written
		stopped bool
		t       *time.Timer
	)
	beat := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped || ctx.Err() != nil {
			return
		}
		var stepID string
		if id := s.beatStep.Load(); id != nil {
			stepID = *id
		}
		s.lane.Notify(tproxy.MethodHeartbeat, tproxy.Heartbeat{Timestamp: time.Now().UTC(), StepID: stepID})
		t.Reset(interval)
	}
	mu.Lock()
	t = time.AfterFunc(interval, beat)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

func (s *server) cleanup(ctx context.Context) (*tproxy.CleanupResult, error) {
	ss := &s.sess
	if !ss.prepared {
		return nil, s.notPrepared(tproxy.MethodCleanup)
	}
	s.sink().Event(ctx, tproxy.Event{Name: tproxy.EventSessionCleanup, Timestamp: time.Now().UTC(),
		Data: dataOf(tproxy.SessionCleanupData{SessionID: ss.id, StepsExecuted: ss.executed, TotalRows: ss.totalRows})})
	s.removeSessionDir()
	ss.prepared, ss.cleaned = false, true
	ss.outputs = nil
	return &tproxy.CleanupResult{Status: "cleaned", SessionID: ss.id, StepsExecuted: ss.executed, TotalRows: ss.totalRows}, nil
}

// sink is where the runtime and steps emit: the connection, behind the
// session's masker.
func (s *server) sink() logsink.Sink {
	return mask.Sink(laneSink{s.lane}, s.sess.masker)
}

// artifacts lists a finished step's artifacts. A file it cannot describe
// is reported in an artifact_refused event to sink rather than failing the
// step.
func (s *server) artifacts(ctx context.Context, sink logsink.Sink, stepID, dir string) []tproxy.Artifact {
	refuse := func(path, reason string, files int64) {
		s.log.Warn("tproxy/worker: artifact refused", "step_id", stepID, "path", path, "reason", reason)
		data := map[string]any{"path": path, "reason": reason}
		if files > 1 {
			data["count"] = files
		}
		sink.Event(ctx, tproxy.Event{Name: tproxy.EventArtifactRefused, Timestamp: time.Now().UTC(), StepID: stepID, Data: data})
	}
	arts, err := listArtifacts(dir, s.sess.limits, refuse)
	if err != nil {
		refuse(".", fmt.Sprintf("listing the artifact directory: %v", err), 1)
	}
	return arts
}

// dataOf is the Data of a lifecycle event: its payload type's JSON
// object, so that the type in package tproxy is the one definition of
// what the event carries.
func dataOf(v any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // the payload types always encode
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	return m
}
