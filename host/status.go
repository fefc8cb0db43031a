package host

import (
	"context"
	"errors"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/transport"
)

// Outcomes of a run, in Status.Outcome.
const (
	OutcomeSuccess   = "success"
	OutcomeFailed    = "failed"
	OutcomeCancelled = "cancelled"
	// OutcomeRunning is the outcome in the status.json that Prepare
	// writes; Collect replaces it. A session directory whose status.json
	// still says it after the run is one whose host died mid-run.
	OutcomeRunning = "running"
)

// Step states, in StepStatus.Status and Attempt.Status.
const (
	// StepRunning is a step attempt in flight, as RunSpec.OnStep sees it.
	StepRunning  = "running"
	StepComplete = "complete"
	StepFailed   = "failed"
	// StepCancelled is a step cancelled with the run (the caller's
	// context, the session's Timeout, a cap reached).
	StepCancelled = "cancelled"
	// StepTimeout is a step that reached its own Timeout
	// (tproxy.StepSpec.Timeout).
	StepTimeout = "timeout"
	// StepSkipped is a step that did not run because a step it needs
	// failed (with RunSpec.ContinueOnError).
	StepSkipped = "skipped"
	// StepNotRun is a step the run did not reach.
	StepNotRun = "not_run"
)

// Failure kinds, in Failure.Kind: what ended the run, from the error.
const (
	FailureInvalidManifest = "invalid_manifest" // a *tproxy.ManifestError
	FailureStep            = "step_failed"      // a *StepError
	FailureWorkerExited    = "worker_exited"    // the worker ended; Status.Exit says how
	FailureProtocol        = "protocol"         // a *ProtocolError that broke the framing
	FailureInvalidResult   = "invalid_result"   // a *ProtocolError naming a call's malformed result
	FailureVersion         = "version"          // a *VersionError
	FailureCancelled       = "cancelled"        // the caller's context was cancelled
	FailureTimeout         = "timeout"          // the caller's deadline passed
	FailureArtifact        = "artifact"         // an *ArtifactError
	FailureSink            = "sink"             // a *SinkError: logs could not be written
	FailureLimit           = "limit"            // a *LimitError: the worker made the host reach a cap
	FailureWorkerError     = "worker_error"     // another *RemoteError
	FailureOther           = "error"            // anything else: the transport, the session directory
)

// Status is the summary of a run, written to status.json after every run:
// success, step failure, worker crash, transport failure, cancellation or
// a cap reached.
type Status struct {
	SessionID string `json:"session_id"`
	// Dir is the session directory.
	Dir string `json:"dir"`
	// Outcome is OutcomeSuccess, OutcomeFailed or OutcomeCancelled;
	// OutcomeRunning until Collect.
	Outcome string `json:"outcome"`
	// Failure says what ended an unsuccessful run; nil on success.
	Failure *Failure `json:"failure,omitempty"`

	StepsTotal     int          `json:"steps_total"`
	StepsCompleted int          `json:"steps_completed"`
	Steps          []StepStatus `json:"steps"`

	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	DurationMS int64     `json:"duration_ms"`
	Phases     Phases    `json:"phases"`

	// Worker describes the worker, once its handshake succeeded.
	Worker *tproxy.WorkerInfo `json:"worker,omitempty"`
	// Exit is how the worker process ended, once it was started.
	Exit *transport.ExitStatus `json:"exit,omitempty"`
	// StderrTail is the end of the worker's stderr, secrets masked.
	StderrTail string `json:"stderr_tail,omitempty"`
	// Transport is what the transport knows of where the worker ran and
	// what it cost, for a Process with a method TransportInfo() any: an
	// E2B sandbox's id, template, envd version, sandbox-seconds and bytes
	// uploaded (e2b.Info), say.
	Transport any `json:"transport,omitempty"`

	Artifacts ArtifactTotals `json:"artifacts"`

	// Protocol counts what the worker sent that the host could not use.
	Protocol ProtocolCounts `json:"protocol"`
	// LogsDropped counts the log records left out of logs.jsonl at its
	// cap (RunSpec.LogCap).
	LogsDropped int64 `json:"logs_dropped,omitempty"`
}

// ProtocolCounts count what a worker sent that the host could not use
// (docs/protocol.md section 12). Each is also quoted, up to a cap, in a
// protocol_warning event.
type ProtocolCounts struct {
	// DroppedNotifications are notifications with an unknown method or
	// params that break the protocol; none of them was persisted.
	DroppedNotifications int64 `json:"dropped_notifications"`
	// SkippedLines are lines before the worker's first protocol message
	// that were not protocol messages (a shell's banner, say).
	SkippedLines int64 `json:"skipped_lines"`
}

// Failure says what ended a run.
type Failure struct {
	// Kind is one of the Failure* constants.
	Kind string `json:"kind"`
	// StepID is the step at fault, if any.
	StepID string `json:"step_id,omitempty"`
	// ErrorType is a failed step's error type (see StepError).
	ErrorType string `json:"error_type,omitempty"`
	// Reason is the error message, secrets masked.
	Reason string `json:"reason"`
}

// StepStatus is one step's part of a Status. Its state, error type and
// duration are those of its last attempt, which agree with the worker's
// step_complete or step_failed event for it.
type StepStatus struct {
	ID     string `json:"id"`
	Driver string `json:"driver"`
	// Status is one of the Step* states.
	Status string `json:"status"`
	// ErrorType is the failure's category (see StepError), for a step
	// that did not complete.
	ErrorType     string `json:"error_type,omitempty"`
	RowsProcessed int64  `json:"rows_processed,omitempty"`
	// DurationMS is how long the step's driver ran, in milliseconds, as
	// the worker measured it; the host's measure when the worker sent
	// none (a driver that had to be killed).
	DurationMS float64 `json:"duration_ms,omitempty"`
	// Note explains an unusual end, such as a stuck driver.
	Note string `json:"note,omitempty"`
	// Outputs are the summaries of the outputs the step kept in the
	// worker, by key (worker.Summarizer), secrets masked.
	Outputs map[string]any `json:"outputs,omitempty"`
	// Attempts are the step's runs, in order: one, unless its Retry
	// policy ran it again.
	Attempts []Attempt `json:"attempts,omitempty"`
	// Artifacts are the files fetched into artifacts/<id>/, from every
	// attempt; a later attempt's file replaces an earlier one's.
	Artifacts []tproxy.Artifact `json:"artifacts,omitempty"`
}

// Attempt is one run of a step.
type Attempt struct {
	// N counts the attempts of the step from 1.
	N int `json:"n"`
	// Status is one of the Step* states.
	Status    string    `json:"status"`
	StartedAt time.Time `json:"started_at"`
	// DurationMS is as in StepStatus.
	DurationMS float64 `json:"duration_ms"`
	ErrorType  string  `json:"error_type,omitempty"`
	// Error is the attempt's error message, secrets masked.
	Error string `json:"error,omitempty"`
	Note  string `json:"note,omitempty"`
}

// Phases are the durations of a run's phases.
type Phases struct {
	PrepareMS int64 `json:"prepare_ms"`
	ExecuteMS int64 `json:"execute_ms"`
	CollectMS int64 `json:"collect_ms"`
}

// ArtifactTotals count the artifacts fetched, those the host's policy
// skipped (artifact_skipped events), and the files the worker did not
// list (artifact_refused events: unsafe paths, and files past the caps it
// was told in prepare).
type ArtifactTotals struct {
	Files   int   `json:"files"`
	Bytes   int64 `json:"bytes"`
	Skipped int   `json:"skipped,omitempty"`
	Refused int64 `json:"refused,omitempty"`
}

// failureKind classifies a run's error.
func failureKind(err error) string {
	var (
		me *tproxy.ManifestError
		se *StepError
		pe *ProtocolError
		ve *VersionError
		ae *ArtifactError
		ke *SinkError
		le *LimitError
		xe *transport.ExitError
		re *RemoteError
		te *StepTimeoutError
	)
	switch {
	case errors.As(err, &te):
		return FailureTimeout
	case errors.As(err, &le):
		// Before the step's own error: the cap cut the step short.
		return FailureLimit
	case errors.As(err, &se):
		if se.ErrorType == "cancelled" {
			return FailureCancelled
		}
		return FailureStep
	case errors.Is(err, context.Canceled):
		return FailureCancelled
	case errors.Is(err, context.DeadlineExceeded):
		return FailureTimeout
	case errors.As(err, &me):
		return FailureInvalidManifest
	case errors.As(err, &pe):
		if pe.Method != "" {
			return FailureInvalidResult
		}
		return FailureProtocol
	case errors.As(err, &ve):
		return FailureVersion
	case errors.As(err, &ae):
		return FailureArtifact
	case errors.As(err, &ke):
		return FailureSink
	case errors.As(err, &xe), errors.Is(err, ErrClosed):
		return FailureWorkerExited
	case errors.As(err, &re):
		if re.Code == tproxy.CodeRequestCancelled {
			return FailureCancelled
		}
		return FailureWorkerError
	}
	return FailureOther
}
