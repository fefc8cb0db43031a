package tproxy

import (
	"encoding/json"
	"fmt"
	"time"
)

// PingParams are the params of MethodPing.
type PingParams struct {
	// Data is echoed back in PingResult.Echo.
	Data string `json:"data,omitempty"`
	// Protocol is the host's protocol major version. It informs: the
	// worker answers with its own, and the host decides.
	Protocol int `json:"protocol,omitempty"`
}

// PingResult is the result of MethodPing. The host's first call is a ping;
// it learns the worker's protocol version and what the worker can run.
type PingResult struct {
	Status    string     `json:"status"` // always "pong"
	Echo      string     `json:"echo"`
	Timestamp time.Time  `json:"timestamp"`
	Protocol  int        `json:"protocol"`
	Worker    WorkerInfo `json:"worker"`
}

// WorkerInfo describes a worker binary.
type WorkerInfo struct {
	Name    string   `json:"name"`
	Version string   `json:"version"`
	Drivers []string `json:"drivers"`
}

// Manifest describes a pipeline: its steps and, optionally, free-form
// pipeline metadata.
type Manifest struct {
	Pipeline map[string]any `json:"pipeline,omitempty"`
	Steps    []StepSpec     `json:"steps"`
}

// MarshalJSON encodes the manifest with its steps always an array, as the
// contract requires, even when there are none.
func (m Manifest) MarshalJSON() ([]byte, error) {
	type plain Manifest // without this method
	if m.Steps == nil {
		m.Steps = []StepSpec{}
	}
	return json.Marshal(plain(m))
}

// StepSpec is one step of a Manifest.
type StepSpec struct {
	// ID names the step; see ValidateID.
	ID string `json:"id"`
	// Driver is the name of the worker driver that runs the step.
	Driver string `json:"driver"`
	// Config is the step's configuration, passed to its driver.
	Config map[string]any `json:"config,omitempty"`
	// Needs lists the steps that must complete before this one.
	Needs []string `json:"needs,omitempty"`
	// Inputs wires outputs of earlier steps to this step's inputs by
	// name. Each must come from a step this one needs, directly or
	// through other steps.
	Inputs map[string]InputRef `json:"inputs,omitempty"`

	// Timeout bounds each attempt of the step, on the host: when it
	// passes, the host cancels the step in the worker, which stays
	// usable, and the attempt ends as a timeout. Zero means no bound but
	// the session's. In JSON, a Go duration string: "90s", "5m".
	Timeout time.Duration `json:"-"`
	// Retry says when a failed attempt runs again; nil runs each step
	// once. The worker ignores Timeout and Retry: they are the host's.
	Retry *Retry `json:"retry,omitempty"`
}

// Retry is a step's retry policy. A step runs again only after a failure
// the policy names; the default names only failures the driver declared
// retryable (error type ErrorTypeTransient), because only the driver
// knows whether a failed attempt had side effects.
type Retry struct {
	// Attempts is the most times the step runs, the first included; 0 and
	// 1 mean once; at most 100.
	Attempts int `json:"attempts"`
	// Backoff is the wait before the second attempt, doubled before each
	// later one; zero means none. In JSON, a Go duration string.
	Backoff time.Duration `json:"-"`
	// On lists the failures that may be retried: step failures' error
	// types, and "timeout" for an attempt that reached the step's Timeout.
	// Empty means []string{ErrorTypeTransient}. Name "timeout" only for a
	// driver that is safe to run twice: a timed-out attempt may have done
	// part of its work.
	On []string `json:"on,omitempty"`
}

// maxAttempts bounds Retry.Attempts: a policy is for a few tries, not a loop.
const maxAttempts = 100

// ErrorTypeTransient is the error type a driver gives a failure that had
// no side effects and may pass if tried again (a refused connection, a
// rate limit): the failures a Retry retries by default.
const ErrorTypeTransient = "transient"

// stepJSON is a StepSpec's JSON form: Timeout as a duration string.
type stepJSON struct {
	plainStep
	Timeout string `json:"timeout,omitempty"`
}

type plainStep StepSpec // without StepSpec's methods

// MarshalJSON encodes the step with Timeout as a duration string.
func (s StepSpec) MarshalJSON() ([]byte, error) {
	j := stepJSON{plainStep: plainStep(s)}
	if s.Timeout != 0 {
		j.Timeout = s.Timeout.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes a step, with Timeout as a duration string.
func (s *StepSpec) UnmarshalJSON(b []byte) error {
	var j stepJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = StepSpec(j.plainStep)
	return parseDuration(j.Timeout, "timeout", &s.Timeout)
}

// retryJSON is a Retry's JSON form: Backoff as a duration string.
type retryJSON struct {
	plainRetry
	Backoff string `json:"backoff,omitempty"`
}

type plainRetry Retry

// MarshalJSON encodes the policy with Backoff as a duration string.
func (r Retry) MarshalJSON() ([]byte, error) {
	j := retryJSON{plainRetry: plainRetry(r)}
	if r.Backoff != 0 {
		j.Backoff = r.Backoff.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes a policy, with Backoff as a duration string.
func (r *Retry) UnmarshalJSON(b []byte) error {
	var j retryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Retry(j.plainRetry)
	return parseDuration(j.Backoff, "retry.backoff", &r.Backoff)
}

func parseDuration(s, field string, d *time.Duration) error {
	if s == "" {
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("tproxy: %s: %q is not a duration such as \"90s\" or \"5m\"", field, s)
	}
	*d = v
	return nil
}

// PrepareParams are the params of MethodPrepare. Prepare fixes the worker's
// session; a second prepare with another session id is refused.
type PrepareParams struct {
	SessionID string         `json:"session_id"`
	Manifest  Manifest       `json:"manifest"`
	Config    map[string]any `json:"config,omitempty"`
	LogLevel  string         `json:"log_level,omitempty"`
	// Secrets says which config values the worker must mask in
	// everything it sends and writes; nil means DefaultSecretKeys.
	Secrets *Secrets `json:"secrets,omitempty"`
	// ArtifactLimits are the host's caps on what a step's artifact
	// listing may hold (docs/protocol.md section 10); nil means none.
	ArtifactLimits *ArtifactLimits `json:"artifact_limits,omitempty"`
}

// ArtifactLimits are the caps a host sends with prepare so that the worker
// does not list, or hash, what the host would refuse anyway. Zero means no
// cap of that kind.
type ArtifactLimits struct {
	// MaxFiles is the most files one step's listing may hold.
	MaxFiles int64 `json:"max_files,omitempty"`
	// MaxFileBytes is the largest file the host fetches.
	MaxFileBytes int64 `json:"max_file_bytes,omitempty"`
}

// PrepareResult is the result of MethodPrepare.
type PrepareResult struct {
	Status        string   `json:"status"` // always "ready"
	SessionID     string   `json:"session_id"`
	SessionDir    string   `json:"session_dir"`
	DriversLoaded []string `json:"drivers_loaded"`
}

// ExecStepParams are the params of MethodExecStep.
type ExecStepParams struct {
	StepID string         `json:"step_id"`
	Driver string         `json:"driver"`
	Config map[string]any `json:"config,omitempty"`
	// Inputs maps an input name to an output of an earlier step. The data
	// stays in the worker; only the reference crosses the wire.
	Inputs map[string]InputRef `json:"inputs,omitempty"`
}

// InputRef names an output kept in the worker's session state.
type InputRef struct {
	FromStep string `json:"from_step"`
	Key      string `json:"key"`
}

// ExecStepResult is the result of a successful MethodExecStep. A failed
// step is a JSON-RPC error with CodeStepFailed, never a result.
type ExecStepResult struct {
	Status        string `json:"status"` // always "complete"
	StepID        string `json:"step_id"`
	RowsProcessed int64  `json:"rows_processed,omitempty"`
	// Outputs holds a summary of each output the step kept in the worker,
	// by key. The outputs themselves stay in the worker.
	Outputs map[string]any `json:"outputs,omitempty"`
	// DurationMS is how long the driver ran, in milliseconds; a worker
	// may send fractions.
	DurationMS float64    `json:"duration_ms"`
	Artifacts  []Artifact `json:"artifacts,omitempty"`
}

// Artifact describes a file a step wrote under its artifact directory.
type Artifact struct {
	// Path is relative to the step's artifact directory, with '/'
	// separators; it never escapes that directory.
	Path string `json:"path"`
	// Size is the file's size in bytes.
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 of the file's contents.
	SHA256 string `json:"sha256"`
}

// CleanupResult is the result of MethodCleanup.
type CleanupResult struct {
	Status        string `json:"status"` // always "cleaned"
	SessionID     string `json:"session_id"`
	StepsExecuted int    `json:"steps_executed"`
	TotalRows     int64  `json:"total_rows,omitempty"`
}

// StepFailure is the data of a CodeStepFailed error.
type StepFailure struct {
	StepID    string `json:"step_id"`
	ErrorType string `json:"error_type"`
	Message   string `json:"message"`
	// Artifacts lists the files the step wrote before it failed; they can
	// be fetched like a successful step's.
	Artifacts []Artifact `json:"artifacts,omitempty"`
}

// DefaultArtifactChunk is the chunk size a host asks for when fetching an
// artifact, and the most a worker sends in one FetchArtifactResult.
const DefaultArtifactChunk = 1 << 20

// FetchArtifactParams are the params of MethodFetchArtifact: a byte range
// of one artifact of a step of the current session.
type FetchArtifactParams struct {
	StepID string `json:"step_id"`
	// Path is the artifact's path as listed, relative to the step's
	// artifact directory, with '/' separators.
	Path   string `json:"path"`
	Offset int64  `json:"offset"`
	// Length is how many bytes to read; the worker sends at most
	// DefaultArtifactChunk.
	Length int `json:"length"`
}

// FetchArtifactResult is the result of MethodFetchArtifact.
type FetchArtifactResult struct {
	// Data is the bytes read (base64 on the wire).
	Data []byte `json:"data"`
	// EOF is true when the range reached the end of the file.
	EOF bool `json:"eof"`
}

// CancelParams are the params of MethodCancelRequest.
type CancelParams struct {
	ID json.RawMessage `json:"id"`
}

// Event is the params of MethodEvent: something that happened, with the
// worker's own timestamp.
type Event struct {
	Name      string         `json:"name"`
	Timestamp time.Time      `json:"timestamp"`
	StepID    string         `json:"step_id,omitempty"`
	Data      map[string]any `json:"data,omitempty"`
	// Source says who reported the event, SourceHost or SourceWorker. The
	// host sets it; it never crosses the wire, so a worker cannot claim
	// to be the host.
	Source string `json:"-"`
}

// DecodeData decodes e's Data into v, a pointer to a struct such as
// StepCompleteData, as json.Unmarshal would decode the event's data
// member.
func (e Event) DecodeData(v any) error {
	b, err := json.Marshal(e.Data)
	if err != nil {
		return fmt.Errorf("tproxy: event %q: %w", e.Name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("tproxy: event %q: %w", e.Name, err)
	}
	return nil
}

// The sources of an event in a session's records (Event.Source).
const (
	SourceHost   = "host"
	SourceWorker = "worker"
)

// Metric is the params of MethodMetric: one measured value.
type Metric struct {
	Name      string            `json:"name"`
	Value     float64           `json:"value"`
	Timestamp time.Time         `json:"timestamp"`
	StepID    string            `json:"step_id,omitempty"`
	Tags      map[string]string `json:"tags,omitempty"`
	Unit      string            `json:"unit,omitempty"`
}

// LogRecord is the params of MethodLog: a log record a driver wrote through
// its step's logger.
type LogRecord struct {
	Level     string         `json:"level"`
	Message   string         `json:"message"`
	Timestamp time.Time      `json:"timestamp"`
	StepID    string         `json:"step_id,omitempty"`
	Attrs     map[string]any `json:"attrs,omitempty"`
	// Source says who logged the record: SourceWorker, or SourceHost for
	// the host's own. It is not on the wire: the host sets it.
	Source string `json:"-"`
}

// Heartbeat is the params of MethodHeartbeat, sent periodically while a
// step runs so that the host can tell a slow step from a hung worker.
type Heartbeat struct {
	Timestamp time.Time `json:"timestamp"`
	StepID    string    `json:"step_id,omitempty"`
}
