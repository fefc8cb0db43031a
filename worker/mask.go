package worker

import (
	"context"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

// maskSink masks secrets in what it forwards: everything a step or the
// runtime emits passes through one, so nothing secret leaves the worker.
type maskSink struct {
	next logsink.Sink
	m    *tproxy.Masker
}

func (s maskSink) Event(ctx context.Context, e tproxy.Event) error {
	return s.next.Event(ctx, s.m.Event(e))
}

func (s maskSink) Metric(ctx context.Context, m tproxy.Metric) error {
	return s.next.Metric(ctx, s.m.Metric(m))
}

func (s maskSink) Flush() error { return s.next.Flush() }
