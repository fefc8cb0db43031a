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
// It stores and returns copies: Data is copied deeply through nested
// map[string]any and []any (the shapes JSON decoding produces), Tags
// shallowly, so neither the caller's later changes nor a reader's edits
// reach what Memory holds. Other values inside Data are shared.
type Memory struct {
	mu      sync.Mutex
	events  []tproxy.Event
	metrics []tproxy.Metric
	logs    []tproxy.LogRecord
}

var _ Sink = (*Memory)(nil)

// Event records e.
func (m *Memory) Event(_ context.Context, e tproxy.Event) error {
	e = copyEvent(e)
	m.mu.Lock()
	m.events = append(m.events, e)
	m.mu.Unlock()
	return nil
}

// Metric records mt.
func (m *Memory) Metric(_ context.Context, mt tproxy.Metric) error {
	mt.Tags = maps.Clone(mt.Tags)
	m.mu.Lock()
	m.metrics = append(m.metrics, mt)
	m.mu.Unlock()
	return nil
}

// Log records r.
func (m *Memory) Log(_ context.Context, r tproxy.LogRecord) error {
	r.Attrs = maps.Clone(r.Attrs)
	m.mu.Lock()
	m.logs = append(m.logs, r)
	m.mu.Unlock()
	return nil
}

// Logs returns a copy of the log records recorded so far, in order.
func (m *Memory) Logs() []tproxy.LogRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]tproxy.LogRecord, len(m.logs))
	for i, r := range m.logs {
		r.Attrs = maps.Clone(r.Attrs)
		out[i] = r
	}
	return out
}

// Flush does nothing and returns nil.
func (m *Memory) Flush() error { return nil }

// Events returns a copy of the events recorded so far, in order.
func (m *Memory) Events() []tproxy.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]tproxy.Event, len(m.events))
	for i, e := range m.events {
		out[i] = copyEvent(e)
	}
	return out
}

// Metrics returns a copy of the metrics recorded so far, in order.
func (m *Memory) Metrics() []tproxy.Metric {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]tproxy.Metric, len(m.metrics))
	for i, mt := range m.metrics {
		mt.Tags = maps.Clone(mt.Tags)
		out[i] = mt
	}
	return out
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
