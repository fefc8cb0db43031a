package logsink

import (
	"context"

	"github.com/tproxy/tproxy"
)

// Sink receives the events, metrics and log records of one session, in
// emission order.
//
// It is the one seam shared by both sides: a worker's steps emit into a Sink
// (in a worker process, one that forwards them to the host), and the host
// persists what it receives through a Sink. Implementations must be safe for
// concurrent use; callers that care about order call them from one
// goroutine.
type Sink interface {
	// Event records one event.
	Event(ctx context.Context, e tproxy.Event) error
	// Metric records one metric.
	Metric(ctx context.Context, m tproxy.Metric) error
	// Log records one log record: a worker's (a driver's slog records,
	// at the session's log level or above), or the host's own.
	Log(ctx context.Context, r tproxy.LogRecord) error
	// Flush makes everything written so far durable or visible. Hosts
	// flush at step boundaries.
	Flush() error
}
