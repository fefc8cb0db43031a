package host

import (
	"context"
	"log/slog"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/mask"
	"github.com/tproxy/tproxy/logsink"
)

// teeHandler passes the host's own log records both to next (the caller's
// logger) and to the session's sink, as records of source "host". The
// worker's records, which the client logs with source "worker", reach the
// sink on their own and are not copied again.
//
// What reaches next is masked with m first: the worker's records and the
// host's diagnostics quote strings a worker controls, and the caller's
// logger is as much a place a secret must not reach as the session's
// files (the sink masks those itself).
type teeHandler struct {
	next  slog.Handler
	sink  logsink.Sink
	m     *mask.Masker
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
		return h.next.Handle(ctx, h.maskRecord(r))
	}
	return nil
}

func (h *teeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	masked := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		masked[i] = h.maskAttr(a)
	}
	return &teeHandler{next: h.next.WithAttrs(masked), sink: h.sink, m: h.m, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h *teeHandler) WithGroup(name string) slog.Handler {
	// Groups qualify keys in the caller's logger; logs.jsonl keeps them flat.
	return &teeHandler{next: h.next.WithGroup(name), sink: h.sink, m: h.m, attrs: h.attrs}
}

// maskRecord returns r with its message and attributes masked.
func (h *teeHandler) maskRecord(r slog.Record) slog.Record {
	out := slog.NewRecord(r.Time, r.Level, h.m.String(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.maskAttr(a))
		return true
	})
	return out
}

// maskAttr masks an attribute as the sink masks a log record's attrs: a
// value under a secret key whole, known secret values wherever they
// occur. An error is masked in the text a handler would print.
func (h *teeHandler) maskAttr(a slog.Attr) slog.Attr {
	key := h.m.String(a.Key)
	v := a.Value.Resolve()
	if h.m.SecretKey(a.Key) && v.Kind() != slog.KindGroup {
		return slog.String(key, tproxy.Masked)
	}
	switch v.Kind() {
	case slog.KindString:
		return slog.String(key, h.m.String(v.String()))
	case slog.KindGroup:
		g := v.Group()
		masked := make([]any, len(g))
		for i, ga := range g {
			masked[i] = h.maskAttr(ga)
		}
		return slog.Group(key, masked...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			if s := h.m.String(x.Error()); s != x.Error() {
				return slog.String(key, s)
			}
			return slog.Any(key, x)
		default:
			return slog.Any(key, h.m.Value(x))
		}
	}
	return slog.Attr{Key: key, Value: v}
}
