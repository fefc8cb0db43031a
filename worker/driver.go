package worker

import "context"

// Driver runs one kind of step. Run reads its configuration and inputs from
// s, emits events, metrics and log records through s while it works, keeps
// outputs for later steps with s.SetOutput, and returns nil on success. ctx
// is cancelled when the host cancels the step or the worker shuts down.
//
// A returned error, or a panic, fails the step (not the worker): the host
// receives a step failure naming the step, the kind of failure (a
// tproxy.ErrorType* category, or one the driver chose with Fail) and the
// error's message.
type Driver interface {
	// Run executes the step.
	Run(ctx context.Context, s *Step) error
}

// DriverFunc adapts a function to Driver.
type DriverFunc func(ctx context.Context, s *Step) error

// Run calls f(ctx, s).
func (f DriverFunc) Run(ctx context.Context, s *Step) error { return f(ctx, s) }
