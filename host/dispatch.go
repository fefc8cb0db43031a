package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/check"
	"github.com/tproxy/tproxy/internal/wire"
)

// What the host quotes of what it could not use (docs/protocol.md section
// 12): every one is counted, the first maxQuoted are quoted, each quote at
// most quoteBytes long, so that a worker sending garbage cannot make the
// host write without bound.
const (
	maxQuoted  = 100
	quoteBytes = 512
)

// notification handles one notification from the worker. It runs in the
// connection's read loop: from Handle, or from hostStream's fast path. A
// notification that breaks the contract is dropped, never silently: it is
// counted and quoted in a protocol_warning event.
func (c *Client) notification(ctx context.Context, method string, params []byte) {
	var err error
	switch method {
	case tproxy.MethodEvent:
		if c.raw != nil && wire.ParseEvent(params, &c.rawEvent) {
			c.eventRaw(ctx, params)
			return
		}
		var e tproxy.Event
		if err = decodeNotification(params, &e, "name", "timestamp"); err == nil {
			err = check.EventName(e.Name)
		}
		if err == nil && c.cfg.sink != nil {
			e.Source = tproxy.SourceWorker
			c.noteSinkErr(c.cfg.sink.Event(ctx, e))
		}
	case tproxy.MethodMetric:
		var m tproxy.Metric
		if err = decodeNotification(params, &m, "name", "value", "timestamp"); err == nil && m.Name == "" {
			err = errors.New("name: empty")
		}
		if err == nil && c.cfg.sink != nil {
			c.noteSinkErr(c.cfg.sink.Metric(ctx, m))
		}
	case tproxy.MethodLog:
		var r tproxy.LogRecord
		if err = decodeNotification(params, &r, "level", "message", "timestamp"); err == nil {
			c.logRecord(ctx, r)
		}
	case tproxy.MethodHeartbeat:
		var h tproxy.Heartbeat
		if err = decodeNotification(params, &h, "timestamp"); err == nil {
			c.lastBeat.Store(time.Now().UnixNano())
			if c.cfg.onHeartbeat != nil {
				c.cfg.onHeartbeat(h)
			}
		}
	default:
		err = errors.New("unknown notification")
	}
	if err != nil {
		c.dropNotification(ctx, method, params, err)
	}
}

// eventRaw persists c.rawEvent, an event parsed from params as the sink
// takes it, without building its data map.
func (c *Client) eventRaw(ctx context.Context, params []byte) {
	if err := check.EventName(c.rawEvent.Name); err != nil {
		c.dropNotification(ctx, tproxy.MethodEvent, params, err)
		return
	}
	c.rawEvent.Source = tproxy.SourceWorker
	c.noteSinkErr(c.raw(ctx, &c.rawEvent))
}

// decodeNotification decodes params into v and checks that the required
// members are there, naming the member at fault in its error.
func decodeNotification(params []byte, v any, required ...string) error {
	if len(params) == 0 {
		return errors.New("params: missing")
	}
	if err := json.Unmarshal(params, v); err != nil {
		if field := faultyMember(params, v, err); field != "" {
			return fmt.Errorf("%s: %w", field, err)
		}
		return err
	}
	if field, why := absent(params, required...); field != "" {
		return fmt.Errorf("%s: %s", field, why)
	}
	return nil
}

// dropNotification counts a notification that is not persisted and says
// so where the run's records are.
func (c *Client) dropNotification(ctx context.Context, method string, params []byte, reason error) {
	n := c.dropped.Add(1)
	c.cfg.logger.Warn("tproxy/host: notification from the worker dropped: it breaks the protocol",
		"method", method, "err", reason, "params", truncate(params, 200))
	if n <= maxQuoted {
		c.warn(ctx, map[string]any{"reason": method + ": " + reason.Error(), "method": method,
			"quote": quoteStart(params), "dropped": n})
	}
}

// skippedLine counts a line skipped before the worker's first protocol
// message and says so.
func (c *Client) skippedLine(line []byte, reason string) {
	n := c.skipped.Add(1)
	c.cfg.logger.Warn("tproxy/host: skipping output before the worker's first protocol message",
		"line", truncate(line, 200), "reason", reason)
	if n <= maxQuoted {
		c.warn(context.Background(), map[string]any{
			"reason": "skipped before the worker's first protocol message: " + reason, "quote": quoteStart(line)})
	}
}

// warn writes a protocol_warning event to the sink, if there is one.
func (c *Client) warn(ctx context.Context, data map[string]any) {
	if c.cfg.sink != nil {
		c.noteSinkErr(c.cfg.sink.Event(ctx, tproxy.Event{Name: tproxy.EventProtocolWarning, Timestamp: time.Now().UTC(),
			Data: data, Source: tproxy.SourceHost}))
	}
}

// quoteStart returns the start of b, at most quoteBytes, as valid UTF-8.
func quoteStart(b []byte) string {
	if len(b) > quoteBytes {
		b = b[:quoteBytes]
	}
	return string([]rune(string(b))) // invalid UTF-8 becomes U+FFFD
}

// ProtocolCounts returns how many notifications the client dropped and
// lines it skipped so far because they broke the protocol.
func (c *Client) ProtocolCounts() ProtocolCounts {
	return ProtocolCounts{DroppedNotifications: c.dropped.Load(), SkippedLines: c.skipped.Load()}
}

// logRecord passes a worker's log record to the sink and to the host's
// logger, marked as the worker's (source "worker").
func (c *Client) logRecord(ctx context.Context, r tproxy.LogRecord) {
	r.Source = tproxy.SourceWorker
	if c.cfg.sink != nil {
		c.noteSinkErr(c.cfg.sink.Log(ctx, r))
	}
	var level slog.Level
	if level.UnmarshalText([]byte(r.Level)) != nil {
		level = slog.LevelInfo
	}
	attrs := make([]slog.Attr, 0, len(r.Attrs)+2)
	attrs = append(attrs, slog.String("source", "worker"))
	if r.StepID != "" {
		attrs = append(attrs, slog.String("step_id", r.StepID))
	}
	for k, v := range r.Attrs {
		attrs = append(attrs, slog.Any(k, v))
	}
	c.cfg.logger.LogAttrs(ctx, level, r.Message, attrs...)
}

// handler is the client's jsonrpc2.Handler: it runs in the connection's
// read loop, in wire order. The streaming notifications never get here
// (hostStream.ReadObject handles them): only what the protocol has no
// use for does, a notification of another method, which is dropped and
// reported, or a request, which is refused.
type handler struct{ c *Client }

func (h handler) Handle(ctx context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if !req.Notif {
		conn.ReplyWithError(ctx, req.ID, &jsonrpc2.Error{Code: tproxy.CodeMethodNotFound,
			Message: fmt.Sprintf("the host serves no methods (got %q)", req.Method)})
		return
	}
	var params json.RawMessage
	if req.Params != nil {
		params = *req.Params
	}
	h.c.notification(ctx, req.Method, params)
}
