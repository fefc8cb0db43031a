package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
)

// rpcConn is the worker's end of the connection: what jsonrpc2's Conn
// would write, written to the Stream directly. Notifications are encoded by
// tproxy.AppendNotification (no maps, no reflection for the hot ones) and
// queued on the stream (Stream.WriteNotification), the same bytes
// Conn.Notify would write. Responses (server.reply) go to the same Stream,
// which writes everything in the order it was queued and makes a response
// wait for the notifications queued before it: a step's notifications stay
// ahead of its response. The server reads the host's messages itself
// (server.read), so a connection costs no goroutine of its own.
type rpcConn struct {
	stream *tproxy.Stream
	async  bool          // Worker.AsyncNotify: queue notifications, do not wait
	done   chan struct{} // closed once the connection is closed
}

// Notify sends a notification, as jsonrpc2's Conn.Notify does.
func (c *rpcConn) Notify(_ context.Context, method string, params any) error {
	if c.closed() {
		return jsonrpc2.ErrClosed
	}
	var err error
	switch {
	case params == nil:
		err = c.stream.WriteObject(&jsonrpc2.Request{Method: method, Notif: true})
	case c.async:
		err = c.stream.QueueNotification(method, params)
	default:
		err = c.stream.WriteNotification(method, params)
	}
	if err != nil && c.closed() {
		return jsonrpc2.ErrClosed
	}
	return err
}

// ReplyWithError sends a response with an error, as jsonrpc2's
// Conn.ReplyWithError does.
func (c *rpcConn) ReplyWithError(_ context.Context, id jsonrpc2.ID, respErr *jsonrpc2.Error) error {
	return c.replyError(true, id, respErr)
}

// replyError sends an error response to id, or with "id": null when
// hasID is false: JSON-RPC 2.0's answer to a message whose id could not be
// read. An error too big for the frame cap (a long message, large data)
// is sent cut short rather than not at all: the request is answered.
func (c *rpcConn) replyError(hasID bool, id jsonrpc2.ID, respErr *jsonrpc2.Error) error {
	if c.closed() {
		return jsonrpc2.ErrClosed
	}
	write := func(e *jsonrpc2.Error) error {
		if hasID {
			return c.stream.WriteObject(&jsonrpc2.Response{ID: id, Error: e})
		}
		return c.stream.WriteObject(&struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      *jsonrpc2.ID    `json:"id"` // always null
			Error   *jsonrpc2.Error `json:"error"`
		}{JSONRPC: "2.0", Error: e})
	}
	err := write(respErr)
	if errors.Is(err, tproxy.ErrFrameTooLarge) {
		err = write(&jsonrpc2.Error{Code: respErr.Code, Message: truncate([]byte(respErr.Message), 100)})
	}
	if err != nil && c.closed() {
		return jsonrpc2.ErrClosed
	}
	return err
}

func (c *rpcConn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// connSink is the worker side of the shared sink: it forwards what steps
// emit to the host as notifications, in emission order.
type connSink struct{ conn *rpcConn }

func (c connSink) Event(ctx context.Context, e tproxy.Event) error {
	return c.conn.Notify(ctx, tproxy.MethodEvent, e)
}

func (c connSink) Metric(ctx context.Context, m tproxy.Metric) error {
	return c.conn.Notify(ctx, tproxy.MethodMetric, m)
}

// Flush is a no-op: each notification is written when it is emitted.
func (c connSink) Flush() error { return nil }

// batchSink collects notifications, encoded, to be written later in one
// go with the response they precede (see server.reply). The runtime sends
// what it emits after a step's driver has returned (artifact refusals,
// the step's metrics, step_complete or step_failed) through one, so that
// the host reads the end of a step and its response in one wake-up
// instead of one per message. No driver code runs between those
// notifications and the response: a driver's own notifications are
// written as it emits them. It is used by the executor goroutine only.
type batchSink struct {
	buf []byte
	max int // the stream's frame cap
}

func (b *batchSink) add(method string, params any) error {
	n := len(b.buf)
	buf, err := tproxy.AppendNotification(b.buf, method, params)
	if err != nil {
		return fmt.Errorf("tproxy: encode message: %w", err)
	}
	if size := len(buf) - n - 1; size > b.max {
		b.buf = buf[:n]
		return &tproxy.FrameError{Op: "write", Reason: "frame too large", Size: size, Limit: b.max,
			Quote: bytes.Clone(buf[n : n+min(size, 64)]), Err: tproxy.ErrFrameTooLarge}
	}
	b.buf = buf
	return nil
}

// take returns what was collected and empties the sink; the returned
// bytes are valid until the sink is next written to.
func (b *batchSink) take() []byte {
	buf := b.buf
	b.buf = buf[:0]
	return buf
}

func (b *batchSink) Event(_ context.Context, e tproxy.Event) error {
	return b.add(tproxy.MethodEvent, e)
}

func (b *batchSink) Metric(_ context.Context, m tproxy.Metric) error {
	return b.add(tproxy.MethodMetric, m)
}

// Flush is a no-op: server.reply writes what was collected.
func (b *batchSink) Flush() error { return nil }

// logHandler is a slog.Handler that sends records to the host as log
// notifications.
type logHandler struct {
	conn   *rpcConn
	ctx    context.Context
	level  slog.Leveler
	stepID string
	mask   *tproxy.Masker
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
	return h.conn.Notify(h.ctx, tproxy.MethodLog, h.mask.LogRecord(rec))
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
