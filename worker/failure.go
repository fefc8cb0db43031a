package worker

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/tproxy/tproxy"
)

// Fail returns err marked with errorType, the kind of failure the step
// reports when its driver returns it: one of the tproxy.ErrorType*
// categories (tproxy.ErrorTypeInput for an input that is missing, say),
// or a short snake_case name of the driver's own ("missing_table"). The
// host sees it as StepError.ErrorType and can branch on it, while the
// message stays err's. errors.Is and errors.As see through it to err.
// Fail returns nil if err is nil, so that `return worker.Fail(t, f())`
// fails only when f does.
//
// Any error with a method ErrorType() string does the same; Fail saves
// declaring a type for it.
func Fail(errorType string, err error) error {
	if err == nil {
		return nil
	}
	return &typedError{typ: errorType, err: err}
}

type typedError struct {
	typ string
	err error
}

func (e *typedError) Error() string     { return e.err.Error() }
func (e *typedError) Unwrap() error     { return e.err }
func (e *typedError) ErrorType() string { return e.typ }

// panicError is the error of a driver that panicked.
type panicError struct{ value any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// errorType names the kind of a step's failure (docs/protocol.md section
// 7), never a Go type name, which would tell the host's reader nothing
// and change with the driver's code:
//
//   - cancelled, when ctx, the step's context, was cancelled, whatever
//     the driver made of it (a child process killed by
//     exec.CommandContext fails with "signal: killed");
//   - panic, for a panic the runtime caught;
//   - the answer of an ErrorType() string method on err's chain (Fail),
//     when not empty;
//   - config for a *ConfigError (DecodeConfig, Typed);
//   - timeout for a deadline that passed inside the driver;
//   - driver otherwise.
func errorType(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return tproxy.ErrorTypeCancelled
	}
	var pe *panicError
	if errors.As(err, &pe) {
		return tproxy.ErrorTypePanic
	}
	var typed interface{ ErrorType() string }
	if errors.As(err, &typed) {
		if t := typed.ErrorType(); t != "" {
			return t
		}
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		return tproxy.ErrorTypeConfig
	}
	var to interface{ Timeout() bool }
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &to) && to.Timeout()) {
		return tproxy.ErrorTypeTimeout
	}
	return tproxy.ErrorTypeDriver
}
