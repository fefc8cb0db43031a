package logsink

import (
	"context"

	"github.com/tproxy/tproxy"
)

// Mask returns a Sink that masks m's secrets in every event and metric
// before passing it to next. A nil m masks nothing.
func Mask(next Sink, m *tproxy.Masker) Sink {
	if m == nil {
		return next
	}
	return maskSink{next: next, m: m}
}

type maskSink struct {
	next Sink
	m    *tproxy.Masker
}

func (s maskSink) Event(ctx context.Context, e tproxy.Event) error {
	return s.next.Event(ctx, s.m.Event(e))
}

func (s maskSink) Metric(ctx context.Context, m tproxy.Metric) error {
	return s.next.Metric(ctx, s.m.Metric(m))
}

func (s maskSink) Flush() error { return s.next.Flush() }
