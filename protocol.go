package tproxy

// ProtocolVersion is the major version of the wire protocol spoken by this
// module. A host refuses a worker whose ping reports another major version.
const ProtocolVersion = 1

// Methods the host calls on the worker.
const (
	MethodPing     = "ping"
	MethodPrepare  = "prepare"
	MethodExecStep = "exec_step"
	MethodCleanup  = "cleanup"
	// MethodFetchArtifact reads a chunk of a file a step listed in its
	// artifacts. Params FetchArtifactParams, result FetchArtifactResult.
	MethodFetchArtifact = "fetch_artifact"
)

// Notifications the worker sends to the host while a call runs.
const (
	MethodEvent     = "event"
	MethodMetric    = "metric"
	MethodLog       = "log"
	MethodHeartbeat = "heartbeat"
)

// MethodCancelRequest is the notification the host sends when the caller's
// context ends before the response arrived. Its params are CancelParams.
const MethodCancelRequest = "$/cancelRequest"

// JSON-RPC error codes. The first five are the standard JSON-RPC 2.0 codes;
// the rest are tproxy's application codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603

	// CodeRequestCancelled answers a request whose context was cancelled
	// through $/cancelRequest (the value LSP uses).
	CodeRequestCancelled = -32800

	// CodeNotPrepared answers exec_step or cleanup before prepare.
	CodeNotPrepared = -32001
	// CodeSessionMismatch answers a second prepare naming another session:
	// one worker serves exactly one session, never a nested one.
	CodeSessionMismatch = -32002
	// CodeUnknownDriver answers exec_step naming a driver the worker lacks.
	CodeUnknownDriver = -32003
	// CodeStepFailed answers exec_step whose driver returned an error or
	// panicked. The error's data is a StepFailure.
	CodeStepFailed = -32004
	// CodeInputUnavailable answers exec_step whose inputs name an output
	// that no earlier step of the session produced.
	CodeInputUnavailable = -32005
)

// CodeInvalidConfig answers prepare when a step's config does not fit the
// config its driver declared (worker.Typed): an unknown key, a value of
// the wrong type, a failed check. It fails the session before any step
// runs, rather than the step once the steps before it have run. The
// error's data names the step and the field: {"step_id", "field",
// "message"}. A host reports it as a *ManifestError.
const CodeInvalidConfig = -32006

// Error types: the stable categories of a failed step's
// StepFailure.ErrorType (docs/protocol.md section 7), so that a host can
// branch on the kind of failure (retry a timeout, not a config mistake)
// without parsing messages. A driver may also name a kind of its own
// (worker.Fail); these names are reserved for what they say.
const (
	// ErrorTypeDriver is the default: the driver failed, for a reason
	// of its own that fits no other category.
	ErrorTypeDriver = "driver"
	// ErrorTypeConfig: the step's config does not fit its driver: an
	// unknown key, a value of the wrong type, a missing or invalid
	// value.
	ErrorTypeConfig = "config"
	// ErrorTypeInput: an input the driver needs is missing or not what
	// it expects.
	ErrorTypeInput = "input"
	// ErrorTypeTimeout: a deadline inside the driver passed (a request
	// or query that timed out); not the host's cancellation.
	ErrorTypeTimeout = "timeout"
	// ErrorTypeCancelled: the host cancelled the step, or the worker
	// stopped under it.
	ErrorTypeCancelled = "cancelled"
	// ErrorTypePanic: the driver crashed and the runtime caught it (a Go
	// panic; in Python an exception outside Exception, such as
	// SystemExit).
	ErrorTypePanic = "panic"
)
