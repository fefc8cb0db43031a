package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/mask"
	"github.com/tproxy/tproxy/transport"
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
	// ErrorType is the kind of failure: one of the tproxy.ErrorType*
	// categories (tproxy.ErrorTypeCancelled, tproxy.ErrorTypeConfig, …),
	// a name the driver chose, or "unknown" when the worker sent none
	// (docs/protocol.md section 7).
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

// configError is the *tproxy.ManifestError that a worker's
// tproxy.CodeInvalidConfig answer to prepare stands for: a step's config
// does not fit its driver, found before any step ran. The error's data
// names the step and the field, and its message names the field too
// (docs/protocol.md section 7); a message missing from it is taken from
// the error's.
func configError(re *RemoteError) error {
	var d struct {
		StepID  string `json:"step_id"`
		Message string `json:"message"`
	}
	json.Unmarshal(re.Data, &d) // what decodes is kept
	reason := d.Message
	if reason == "" {
		reason = re.Message
	}
	return &tproxy.ManifestError{StepID: d.StepID, Reason: "config: " + reason}
}

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
// intact: a path that would escape the session directory, a negative
// size, bytes that do not match the listed size and SHA-256, or a file
// the host could not write (Err then holds the cause, such as ENOSPC).
type ArtifactError struct {
	// StepID and Path name the artifact as the worker listed it.
	StepID, Path string
	// Reason says what is wrong.
	Reason string
	// Err is the underlying error, if any: errors.Is(err,
	// syscall.ENOSPC) sees a full disk through it.
	Err error
}

// Error names the step, the path, the reason and the underlying error.
func (e *ArtifactError) Error() string {
	msg := fmt.Sprintf("tproxy/host: artifact %q of step %q: %s", e.Path, e.StepID, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns Err.
func (e *ArtifactError) Unwrap() error { return e.Err }

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

// ErrRunState is matched by errors.Is for a Run phase called out of
// order: Prepare twice, Execute before Prepare or twice, Execute or
// Prepare after Collect, or any phase while another is running. The Run
// is unchanged by the refused call.
var ErrRunState = errors.New("tproxy/host: Run phase out of order")

// ErrSessionDirUsed is matched by errors.Is when Prepare finds its session
// directory already used: not empty, or claimed by another run at the
// same moment. A session directory belongs to one run.
var ErrSessionDirUsed = errors.New("tproxy/host: the session directory is not empty: a session directory belongs to one run")

// LimitError reports that a worker made the host reach one of its caps on
// what a session may spend (the README's caps table). The run fails with
// it (status kind FailureLimit) and status.json is still written.
type LimitError struct {
	// Limit names the cap: "log_bytes" (RunSpec.MaxLogBytes, the bytes
	// of events.jsonl and metrics.jsonl together).
	Limit string
	// Max is the cap in force.
	Max int64
	// Err is what reaching the cap caused, such as the log sink's
	// refusal (which wraps logsink.ErrMaxBytes).
	Err error
}

// Error names the cap.
func (e *LimitError) Error() string {
	what := e.Limit
	if e.Limit == limitLogBytes {
		what = "events.jsonl and metrics.jsonl together"
	}
	msg := fmt.Sprintf("tproxy/host: the session reached its cap of %d bytes for %s", e.Max, what)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns Err.
func (e *LimitError) Unwrap() error { return e.Err }

// limitLogBytes is LimitError.Limit for RunSpec.MaxLogBytes.
const limitLogBytes = "log_bytes"

// maskError returns err with m's secrets masked in its message and in
// every field of its chain that carries text from the worker: a
// *transport.ExitError's stderr tail and exit reason, a *RemoteError's
// message and data, a *StepError's message, a *tproxy.FrameError's quote
// (inside a *ProtocolError), an *ArtifactError's path and reason, a
// *tproxy.ManifestError's reason. Those types are copied with their
// fields masked, so errors.As still finds them; sentinels and errors
// without secrets are kept as they are, so errors.Is still matches. An
// error of another type whose own text holds a secret is replaced by one
// that has the masked text and unwraps to its masked chain: its type is
// lost, the secret with it.
func maskError(m *mask.Masker, err error) error {
	if err == nil || !m.HasValues() {
		return err
	}
	masked, _ := maskChain(m, err)
	return masked
}

// maskChain masks err as maskError does, and reports whether anything

// maskWrapped masks the chain under a wrapper's error field (field
// returns its address in a given wrapper): a copy holding the masked
// chain, or e itself when nothing under it changed.
func maskWrapped[T any, P interface {
	*T
	error
}](m *mask.Masker, e P, field func(*T) *error) (error, bool) {
	inner := *field(e)
	if inner == nil {
		return e, false
	}
	masked, changed := maskChain(m, inner)
	if !changed {
		return e, false
	}
	c := *e
	*field(&c) = masked
	return P(&c), true
}

// changed.
func maskChain(m *mask.Masker, err error) (error, bool) {
	str := func(s string) (string, bool) {
		ms := m.String(s)
		return ms, ms != s
	}
	switch e := err.(type) {
	case *transport.ExitError:
		c := *e
		var ch1, ch2 bool
		c.Stderr, ch1 = str(e.Stderr)
		c.Status.Reason, ch2 = str(e.Status.Reason)
		if !ch1 && !ch2 {
			return e, false
		}
		return &c, true
	case *RemoteError:
		c := *e
		var ch1, ch2 bool
		c.Message, ch1 = str(e.Message)
		var data string
		data, ch2 = str(string(e.Data))
		if !ch1 && !ch2 {
			return e, false
		}
		if ch2 {
			c.Data = json.RawMessage(data)
		}
		return &c, true
	case *StepError:
		c := *e
		var ch1, ch2, ch3 bool
		c.Message, ch1 = str(e.Message)
		c.ErrorType, ch2 = str(e.ErrorType)
		if e.Remote != nil {
			var r error
			r, ch3 = maskChain(m, e.Remote)
			c.Remote = r.(*RemoteError)
		}
		if !ch1 && !ch2 && !ch3 {
			return e, false
		}
		return &c, true
	case *tproxy.FrameError:
		c := *e
		var ch1, ch2, ch3 bool
		c.Reason, ch1 = str(e.Reason)
		var quote string
		quote, ch2 = str(string(e.Quote))
		if ch2 {
			c.Quote = []byte(quote)
		}
		if e.Err != nil {
			c.Err, ch3 = maskChain(m, e.Err)
		}
		if !ch1 && !ch2 && !ch3 {
			return e, false
		}
		return &c, true
	case *ArtifactError:
		c := *e
		var ch1, ch2, ch3 bool
		c.Path, ch1 = str(e.Path)
		c.Reason, ch2 = str(e.Reason)
		if e.Err != nil {
			c.Err, ch3 = maskChain(m, e.Err)
		}
		if !ch1 && !ch2 && !ch3 {
			return e, false
		}
		return &c, true
	case *tproxy.ManifestError:
		c := *e
		var ch bool
		c.Reason, ch = str(e.Reason)
		if !ch {
			return e, false
		}
		return &c, true
	case *ProtocolError:
		return maskWrapped(m, e, func(w *ProtocolError) *error { return &w.Err })
	case *SinkError:
		return maskWrapped(m, e, func(w *SinkError) *error { return &w.Err })
	case *LimitError:
		return maskWrapped(m, e, func(w *LimitError) *error { return &w.Err })
	}
	// Any other error: keep it if neither its text nor its chain holds a
	// secret; otherwise stand in for it.
	var kids []error
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		if k := u.Unwrap(); k != nil {
			kids = []error{k}
		}
	case interface{ Unwrap() []error }:
		kids = u.Unwrap()
	}
	changed := false
	masked := make([]error, len(kids))
	for i, k := range kids {
		var ch bool
		masked[i], ch = maskChain(m, k)
		changed = changed || ch
	}
	msg, ch := str(err.Error())
	if !ch && !changed {
		return err, false
	}
	return &maskedError{msg: msg, errs: masked}, true
}

// maskedError stands in for an error whose text held a secret: its text
// masked, its chain masked.
type maskedError struct {
	msg  string
	errs []error
}

func (e *maskedError) Error() string   { return e.msg }
func (e *maskedError) Unwrap() []error { return e.errs }
