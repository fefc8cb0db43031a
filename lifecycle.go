package tproxy

// The lifecycle's events (docs/protocol.md section 9): the names of the
// events a worker runtime and the host emit around a session's steps, so
// that every session directory records the same story whatever language
// the worker is written in. Each says which data fields it carries.
const (
	// EventSessionInitialized (worker, at prepare): session_id,
	// steps_total.
	EventSessionInitialized = "session_initialized"
	// EventStepStart (worker, before the driver runs): driver,
	// step_number.
	EventStepStart = "step_start"
	// EventStepComplete (worker, after a driver that succeeded): driver,
	// rows_processed, duration_ms, outputs (the output keys).
	EventStepComplete = "step_complete"
	// EventStepFailed (worker, after a driver that failed or was
	// cancelled): driver, error_type, message, duration_ms, and maybe
	// traceback.
	EventStepFailed = "step_failed"
	// EventArtifactRefused (worker): path, reason, and count when the
	// refusal stands for several files (those past the host's file cap):
	// a file of the step's artifact directory that is not listed.
	EventArtifactRefused = "artifact_refused"
	// EventSessionCleanup (worker, at cleanup): session_id,
	// steps_executed, total_rows.
	EventSessionCleanup = "session_cleanup"

	// EventRunStart (host, once the session directory is claimed):
	// session_id, steps_total.
	EventRunStart = "run_start"
	// EventPhaseComplete (host): phase (prepare, execute, collect),
	// duration_ms.
	EventPhaseComplete = "phase_complete"
	// EventStepSkipped (host): reason: a step not run because a step it
	// needs failed.
	EventStepSkipped = "step_skipped"
	// EventStepTimeout (host): attempt, timeout_ms, stuck: an attempt
	// reached the step's Timeout and was cancelled (stuck: the driver
	// ignored the cancel and the worker was killed).
	EventStepTimeout = "step_timeout"
	// EventStepRetry (host, before an attempt after the first): attempt,
	// attempts, after_ms (the backoff), error_type, reason.
	EventStepRetry = "step_retry"
	// EventArtifactSkipped (host): path, size, reason, and count when
	// several were skipped: artifacts the host's policy refused.
	EventArtifactSkipped = "artifact_skipped"
	// EventProtocolWarning (host): what the worker sent that broke the
	// protocol, quoted.
	EventProtocolWarning = "protocol_warning"
	// EventRunComplete (host, last event of a successful run):
	// steps_completed, steps_total, duration_ms.
	EventRunComplete = "run_complete"
	// EventRunFailed (host, last event of an unsuccessful run): outcome,
	// kind, reason, steps_completed, steps_total, duration_ms.
	EventRunFailed = "run_failed"
)

// The lifecycle's metrics.
const (
	// MetricStepsTotal (worker, at prepare): the manifest's steps.
	MetricStepsTotal = "steps_total"
	// MetricRowsProcessed (worker, after a step that succeeded with rows
	// ≠ 0): the step's rows.
	MetricRowsProcessed = "rows_processed"
	// MetricStepDurationMS (worker, after a step that succeeded): the
	// driver's duration, unit "ms".
	MetricStepDurationMS = "step_duration_ms"
	// MetricArtifactsFiles and MetricArtifactsBytes (host, at collect):
	// the artifacts fetched in the session.
	MetricArtifactsFiles = "artifacts_files_total"
	MetricArtifactsBytes = "artifacts_bytes_total"
)

// The data of the worker's lifecycle events, one type per event: what a
// worker in any language sends (docs/protocol.md section 9) and what
// Event.DecodeData gives back from events.jsonl or a sink.

// SessionInitializedData is the data of EventSessionInitialized.
type SessionInitializedData struct {
	SessionID  string `json:"session_id"`
	StepsTotal int    `json:"steps_total"`
}

// StepStartData is the data of EventStepStart.
type StepStartData struct {
	Driver string `json:"driver"`
	// StepNumber counts the session's exec_step calls that reached a
	// driver, from 1: a retried step gets a new number per attempt.
	StepNumber int `json:"step_number"`
}

// StepCompleteData is the data of EventStepComplete.
type StepCompleteData struct {
	Driver        string  `json:"driver"`
	RowsProcessed int64   `json:"rows_processed"`
	DurationMS    float64 `json:"duration_ms"`
	// Outputs are the keys of the outputs the step kept, sorted.
	Outputs []string `json:"outputs,omitempty"`
}

// StepFailedData is the data of EventStepFailed.
type StepFailedData struct {
	Driver string `json:"driver"`
	// ErrorType is the failure's category (the ErrorType* constants, or
	// the driver's own).
	ErrorType  string  `json:"error_type"`
	Message    string  `json:"message"`
	DurationMS float64 `json:"duration_ms"`
	Traceback  string  `json:"traceback,omitempty"`
}

// SessionCleanupData is the data of EventSessionCleanup.
type SessionCleanupData struct {
	SessionID     string `json:"session_id"`
	StepsExecuted int    `json:"steps_executed"`
	TotalRows     int64  `json:"total_rows"`
}
