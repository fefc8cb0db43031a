package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/mask"
	"github.com/tproxy/tproxy/internal/wire"
)

// lane is the fast lane for the worker's notifications: they are encoded
// by wire.AppendNotification (no maps, no reflection for the hot ones)
// and written to the Stream directly, the bytes Conn.Notify would write.
// The Stream writes everything in the order it was queued, Conn's
// responses included, and makes a response wait for the notifications
// queued before it: a step's notifications stay ahead of its response.
type lane struct {
	stream *wire.Stream
	async  bool          // Worker.AsyncNotify: queue notifications, do not wait
	done   chan struct{} // closed once the connection is closed
}

// Notify sends a notification: written when it returns, or only queued
// with Worker.AsyncNotify.
func (l *lane) Notify(method string, params any) error {
	if l.closed() {
		return jsonrpc2.ErrClosed
	}
	var err error
	if l.async {
		err = l.stream.QueueNotification(method, params)
	} else {
		err = l.stream.WriteNotification(method, params)
	}
	if err != nil && l.closed() {
		return jsonrpc2.ErrClosed
	}
	return err
}

// replyError sends an error response to id, or with "id": null when id is
// nil: JSON-RPC 2.0's answer to a message whose id could not be read,
// which jsonrpc2's Conn cannot send. An error too big for the frame cap
// (a long message, large data) is sent cut short rather than not at all.
func (l *lane) replyError(id *jsonrpc2.ID, respErr *jsonrpc2.Error) error {
	if l.closed() {
		return jsonrpc2.ErrClosed
	}
	write := func(e *jsonrpc2.Error) error {
		return l.stream.WriteObject(&struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      *jsonrpc2.ID    `json:"id"` // null when nil
			Error   *jsonrpc2.Error `json:"error"`
		}{JSONRPC: "2.0", ID: id, Error: e})
	}
	err := write(respErr)
	if errors.Is(err, tproxy.ErrFrameTooLarge) {
		err = write(&jsonrpc2.Error{Code: respErr.Code, Message: truncate([]byte(respErr.Message), 100)})
	}
	if err != nil && l.closed() {
		return jsonrpc2.ErrClosed
	}
	return err
}

func (l *lane) closed() bool { return chanClosed(l.done) }

// laneSink is the worker side of the shared sink: it forwards what steps
// emit to the host as notifications, in emission order.
type laneSink struct{ l *lane }

func (c laneSink) Event(_ context.Context, e tproxy.Event) error {
	return c.l.Notify(tproxy.MethodEvent, e)
}

func (c laneSink) Metric(_ context.Context, m tproxy.Metric) error {
	return c.l.Notify(tproxy.MethodMetric, m)
}

func (c laneSink) Log(_ context.Context, r tproxy.LogRecord) error {
	return c.l.Notify(tproxy.MethodLog, r)
}

// Flush is a no-op: each notification is written when it is emitted.
func (c laneSink) Flush() error { return nil }

// heldSink holds notifications in the Stream to go out in one write with
// the next message, the response they precede (Stream.HoldNotification).
// The runtime sends what it emits after a step's driver has returned
// (artifact refusals, the step's metrics, step_complete or step_failed)
// through one, so that the host reads the end of a step and its response
// in one wake-up instead of one per message. No driver code runs between
// those notifications and the response: a driver's own notifications are
// written as it emits them.
type heldSink struct{ l *lane }

func (h heldSink) Event(_ context.Context, e tproxy.Event) error {
	return h.l.stream.HoldNotification(tproxy.MethodEvent, e)
}

func (h heldSink) Metric(_ context.Context, m tproxy.Metric) error {
	return h.l.stream.HoldNotification(tproxy.MethodMetric, m)
}

func (h heldSink) Log(_ context.Context, r tproxy.LogRecord) error {
	return h.l.stream.HoldNotification(tproxy.MethodLog, r)
}

// Flush is a no-op: the response's write takes what is held.
func (h heldSink) Flush() error { return nil }

// logHandler is a slog.Handler that sends records to the host as log
// notifications.
type logHandler struct {
	lane   *lane
	level  slog.Leveler
	stepID string
	mask   *mask.Masker
	attrs  []slog.Attr
	group  string
}

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	rec := tproxy.LogRecord{
		Level:     r.Level.String(),
		Message:   r.Message,
		Timestamp: r.Time.UTC(),
		StepID:    h.stepID,
	}
	if rec.Timestamp.IsZero() {
		rec.Timestamp = time.Now().UTC()
	}
	if len(h.attrs) > 0 || r.NumAttrs() > 0 {
		rec.Attrs = map[string]any{}
		for _, a := range h.attrs {
			addAttr(rec.Attrs, "", a)
		}
		r.Attrs(func(a slog.Attr) bool {
			addAttr(rec.Attrs, h.group, a)
			return true
		})
	}
	return h.lane.Notify(tproxy.MethodLog, h.mask.LogRecord(rec))
}

// addAttr flattens groups into dotted keys.
func addAttr(dst map[string]any, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	key := a.Key
	if prefix != "" && key != "" {
		key = prefix + "." + key
	} else if key == "" {
		key = prefix
	}
	if v.Kind() == slog.KindGroup {
		for _, g := range v.Group() {
			addAttr(dst, key, g)
		}
		return
	}
	if key == "" {
		return
	}
	switch v.Kind() {
	case slog.KindTime:
		dst[key] = v.Time().UTC()
	case slog.KindDuration:
		dst[key] = v.Duration().String()
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			dst[key] = err.Error()
			return
		}
		dst[key] = v.Any()
	default:
		dst[key] = v.Any()
	}
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if h.group != "" {
			a.Key = h.group + "." + a.Key
		}
		h2.attrs = append(h2.attrs, a)
	}
	return &h2
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	if h.group != "" {
		name = h.group + "." + name
	}
	h2.group = name
	return &h2
}

// debugLogger routes jsonrpc2's own messages to the logger at debug level.
type debugLogger struct{ l *slog.Logger }

func (d debugLogger) Printf(format string, v ...any) {
	d.l.Debug(fmt.Sprintf(format, v...))
}
