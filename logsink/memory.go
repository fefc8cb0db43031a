package logsink

import (
	"context"
	"maps"
	"sync"

	"github.com/tproxy/tproxy"
)

// Memory is a Sink that keeps everything in memory, in order, for tests and
// for callers that inspect a run afterwards. The zero value is ready to use.
//
// It stores and returns copies: an event's Data and a log record's Attrs
// are copied deeply through nested map[string]any and []any (the shapes
// JSON decoding produces), a metric's Tags shallowly, so neither the
// caller's later changes nor a reader's edits reach what Memory holds.
// Other values inside Data and Attrs are shared.
type Memory struct {
	mu      sync.Mutex
	events  []tproxy.Event
	metrics []tproxy.Metric
	logs    []tproxy.LogRecord
}

var _ Sink = (*Memory)(nil)

// Event records e.
func (m *Memory) Event(_ context.Context, e tproxy.Event) error {
	record(&m.mu, &m.events, copyEvent(e))
	return nil
}

// Metric records mt.
func (m *Memory) Metric(_ context.Context, mt tproxy.Metric) error {
	record(&m.mu, &m.metrics, copyMetric(mt))
	return nil
}

// Log records r.
func (m *Memory) Log(_ context.Context, r tproxy.LogRecord) error {
	record(&m.mu, &m.logs, copyLog(r))
	return nil
}

// Flush does nothing and returns nil.
func (m *Memory) Flush() error { return nil }

// Events returns a copy of the events recorded so far, in order.
func (m *Memory) Events() []tproxy.Event { return snapshot(&m.mu, &m.events, copyEvent) }

// Metrics returns a copy of the metrics recorded so far, in order.
func (m *Memory) Metrics() []tproxy.Metric { return snapshot(&m.mu, &m.metrics, copyMetric) }

// Logs returns a copy of the log records recorded so far, in order.
func (m *Memory) Logs() []tproxy.LogRecord { return snapshot(&m.mu, &m.logs, copyLog) }

// record appends x, already copied, to *xs under mu.
func record[T any](mu *sync.Mutex, xs *[]T, x T) {
	mu.Lock()
	*xs = append(*xs, x)
	mu.Unlock()
}

// snapshot returns a copy of *xs, each element copied by cp, under mu.
func snapshot[T any](mu *sync.Mutex, xs *[]T, cp func(T) T) []T {
	mu.Lock()
	defer mu.Unlock()
	out := make([]T, len(*xs))
	for i, x := range *xs {
		out[i] = cp(x)
	}
	return out
}

func copyMetric(mt tproxy.Metric) tproxy.Metric {
	mt.Tags = maps.Clone(mt.Tags)
	return mt
}

func copyLog(r tproxy.LogRecord) tproxy.LogRecord {
	if r.Attrs != nil {
		r.Attrs = copyValue(r.Attrs).(map[string]any)
	}
	return r
}

func copyEvent(e tproxy.Event) tproxy.Event {
	if e.Data != nil {
		e.Data = copyValue(e.Data).(map[string]any)
	}
	return e
}

func copyValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		if v == nil {
			return v
		}
		c := make(map[string]any, len(v))
		for k, x := range v {
			c[k] = copyValue(x)
		}
		return c
	case []any:
		if v == nil {
			return v
		}
		c := make([]any, len(v))
		for i, x := range v {
			c[i] = copyValue(x)
		}
		return c
	}
	return v
}
