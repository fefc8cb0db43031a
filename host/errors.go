package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrClosed is matched by errors.Is for every call that failed because the
// connection to the worker is closed: by Close, by the worker's exit (then
// the error also holds a *transport.ExitError), or by a protocol violation
// (then it also holds a *ProtocolError).
var ErrClosed = errors.New("connection to the worker closed")

// RemoteError is an error the worker answered a call with.
type RemoteError struct {
	// Method is the method that was called.
	Method string
	// Code is the JSON-RPC error code, one of the tproxy.Code* constants
	// for the runtime's own errors.
	Code int64
	// Message is the worker's error message.
	Message string
	// Data is the error's data member, if any.
	Data json.RawMessage
}

// Error names the method, the code and the worker's message.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("tproxy/host: %s: worker answered error %d: %s", e.Method, e.Code, e.Message)
}

// StepError reports a step that failed in the worker: its driver returned
// an error or panicked. It wraps the RemoteError it came in.
type StepError struct {
	// StepID is the failed step.
	StepID string
	// ErrorType is the kind of failure: "panic", "cancelled", or the Go
	// type of the driver's error.
	ErrorType string
	// Message is the driver's error message.
	Message string
	// Remote is the error as it came over the wire.
	Remote *RemoteError
}

// Error names the step id, the error type and the message.
func (e *StepError) Error() string {
	return fmt.Sprintf("tproxy/host: step %q failed (%s): %s", e.StepID, e.ErrorType, e.Message)
}

// Unwrap returns the RemoteError.
func (e *StepError) Unwrap() error { return e.Remote }

// ProtocolError reports a worker that broke the protocol. Either bytes
// that break the framing (an oversize frame, a line that is not JSON or not
// JSON-RPC; Method is empty): the connection is closed after one. Or a
// call's result that does not have the method's shape (Method and Field
// say where): the framing is intact and the connection stays usable.
type ProtocolError struct {
	// Method is the call whose result was malformed; empty for a framing
	// violation.
	Method string
	// Field is the result member at fault, dotted for nested members
	// (worker.drivers), or empty when the result as a whole is at fault.
	Field string
	// Err is what broke the protocol.
	Err error
}

// Error names what broke the protocol.
func (e *ProtocolError) Error() string {
	switch {
	case e.Method == "":
		return "tproxy/host: protocol violation: " + e.Err.Error()
	case e.Field == "":
		return fmt.Sprintf("tproxy/host: %s: the worker's result breaks the protocol: %v", e.Method, e.Err)
	}
	return fmt.Sprintf("tproxy/host: %s: the worker's result breaks the protocol: %s: %v", e.Method, e.Field, e.Err)
}

// Unwrap returns the underlying error, typically a *tproxy.FrameError.
func (e *ProtocolError) Unwrap() error { return e.Err }

// VersionError reports a worker that speaks another protocol version.
type VersionError struct {
	// Host and Worker are the protocol versions each side speaks.
	Host, Worker int
}

// Error names both protocol versions.
func (e *VersionError) Error() string {
	return fmt.Sprintf("tproxy/host: the worker speaks protocol version %d, this host speaks version %d", e.Worker, e.Host)
}

// ArtifactError reports an artifact that was refused or did not arrive
// intact: a path that would escape the session directory, a file over the
// size cap, or bytes that do not match the listed size and SHA-256.
type ArtifactError struct {
	// StepID and Path name the artifact as the worker listed it.
	StepID, Path string
	// Reason says what is wrong.
	Reason string
}

// Error names the step, the path and the reason.
func (e *ArtifactError) Error() string {
	return fmt.Sprintf("tproxy/host: artifact %q of step %q: %s", e.Path, e.StepID, e.Reason)
}

// SinkError reports that what the worker sent could not be persisted: the
// log sink failed to write or flush. Err is the sink's error, such as an
// *fs.PathError for a full disk.
type SinkError struct {
	// Op says what failed.
	Op string
	// Err is the sink's error.
	Err error
}

// Error names the operation and the sink's error.
func (e *SinkError) Error() string { return "tproxy/host: " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the sink's error.
func (e *SinkError) Unwrap() error { return e.Err }

// SessionTimeoutError is the cause of the context a Run's phases use once
// RunSpec.Timeout has passed. It wraps context.DeadlineExceeded.
type SessionTimeoutError struct {
	// Timeout is the RunSpec.Timeout that passed.
	Timeout time.Duration
}

// Error names the timeout.
func (e *SessionTimeoutError) Error() string {
	return fmt.Sprintf("tproxy/host: the session's timeout of %v passed", e.Timeout)
}

// Unwrap returns context.DeadlineExceeded.
func (e *SessionTimeoutError) Unwrap() error { return context.DeadlineExceeded }
