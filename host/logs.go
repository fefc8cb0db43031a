package host

import (
	"context"
	"log/slog"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

// teeHandler passes the host's own log records both to next (the caller's
// logger) and to the session's sink, as records of source "host". The
// worker's records, which the client logs with source "worker", reach the
// sink on their own and are not copied again.
type teeHandler struct {
	next  slog.Handler
	sink  logsink.Sink
	attrs []slog.Attr
}

func (h *teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *teeHandler) Handle(ctx context.Context, r slog.Record) error {
	rec := tproxy.LogRecord{Level: r.Level.String(), Message: r.Message, Timestamp: r.Time.UTC(), Source: tproxy.SourceHost}
	worker := false
	add := func(a slog.Attr) bool {
		switch {
		case a.Key == "source" && a.Value.String() == tproxy.SourceWorker:
			worker = true
		case a.Key == "step_id":
			rec.StepID = a.Value.String()
		case a.Key == "session_id":
		default:
			if rec.Attrs == nil {
				rec.Attrs = map[string]any{}
			}
			rec.Attrs[a.Key] = a.Value.Resolve().Any()
		}
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	if !worker && r.Level >= slog.LevelInfo {
		if rec.Timestamp.IsZero() {
			rec.Timestamp = time.Now().UTC()
		}
		h.sink.Log(ctx, rec) // a write error is sticky in the sink
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &teeHandler{next: h.next.WithAttrs(attrs), sink: h.sink, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h *teeHandler) WithGroup(name string) slog.Handler {
	// Groups qualify keys in the caller's logger; logs.jsonl keeps them flat.
	return &teeHandler{next: h.next.WithGroup(name), sink: h.sink, attrs: h.attrs}
}
