package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
)

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

// hostStream records the first frame error, so calls can report a protocol
// violation rather than a bare closed connection, and closes only the
// worker's stdin when jsonrpc2 closes it: ending the worker is Close's job.
type hostStream struct {
	c *Client
	s *wire.Stream

	// Read loop only: whether a valid message arrived, and the banner
	// skipped before it.
	started                  bool
	bannerLines, bannerBytes int
}

// ReadObject reads the next message for jsonrpc2. The streaming
// notifications (event, metric, log, heartbeat) in their common shape
// never reach jsonrpc2, whose decoding builds maps: they are handled here,
// in the read loop and in wire order like every message, and ReadObject
// goes on to the next frame. A response is only returned after every
// notification the worker sent before it has been handled.
func (h *hostStream) ReadObject(v any) error {
	for {
		frame, err := h.s.ReadFrame()
		if err == nil {
			h.c.heard()
			// The streaming notifications are handled here, never by
			// jsonrpc2: the fast lane takes their common shape, and
			// jsonrpc2's own request decoding the rare ones (members in
			// another order, extra members), so that they take the same
			// route. Every other frame is jsonrpc2's.
			method, params, ok := wire.ParseNotification(frame)
			if !ok {
				method, params, ok = rareNotification(frame)
			}
			if ok {
				h.started = true
				h.c.notification(context.Background(), method, params)
				continue
			}
			err = wire.DecodeFrame(frame, v)
			if err != nil && unsentID(frame) {
				h.started = true
				h.c.cfg.logger.Debug("tproxy/host: dropped a response to an id this host never sends", "frame", truncate(frame, 200))
				continue
			}
			if h.banner(frame, err) {
				continue
			}
		}
		return h.readErr(err)
	}
}

// rareNotification decodes frame as jsonrpc2 would, and returns it when it
// is a streaming notification (event, metric, log, heartbeat) in a shape
// wire.ParseNotification does not take.
func rareNotification(frame []byte) (method string, params []byte, ok bool) {
	if !bytes.Contains(frame, []byte(`"method"`)) {
		return "", nil, false // a response, the common case: no decoding
	}
	// What jsonrpc2 would refuse stays its to refuse (wire.DecodeFrame,
	// anyMessage): invalid UTF-8, a batch, a message that is both a
	// request and a response.
	var kind struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if !utf8.Valid(frame) || len(frame) == 0 || frame[0] != '{' ||
		json.Unmarshal(frame, &kind) != nil || kind.Result != nil || kind.Error != nil {
		return "", nil, false
	}
	var req jsonrpc2.Request
	if json.Unmarshal(frame, &req) != nil || !req.Notif {
		return "", nil, false
	}
	switch req.Method {
	case tproxy.MethodEvent, tproxy.MethodMetric, tproxy.MethodLog, tproxy.MethodHeartbeat:
	default:
		return "", nil, false
	}
	if req.Params != nil {
		params = *req.Params
	}
	return req.Method, params, true
}

// unsentID reports whether frame is a response whose id is a number this
// host never sends (negative, fractional, beyond uint64): valid JSON-RPC
// that answers no call, dropped like a response to an unknown id, where
// jsonrpc2 would refuse to decode it and end the session.
func unsentID(frame []byte) bool {
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method json.RawMessage `json:"method"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if json.Unmarshal(frame, &m) != nil || m.Method != nil || m.Result == nil && m.Error == nil || len(m.ID) == 0 {
		return false
	}
	if c := m.ID[0]; c != '-' && (c < '0' || c > '9') {
		return false // a string or null: jsonrpc2 takes those
	}
	var id jsonrpc2.ID
	return json.Unmarshal(m.ID, &id) != nil
}

// Limits of the output a worker may write before its first protocol
// message (a shell's banner, a login message) that is skipped.
const (
	maxBannerLines = 100
	maxBannerBytes = 64 << 10
)

// banner reports whether frame, which decoded with err, is to be skipped
// as output before the protocol started: until the worker's first valid
// message, lines that are not JSON-RPC are logged and skipped, within
// maxBannerLines and maxBannerBytes. After it, every such line is a
// protocol violation.
func (h *hostStream) banner(frame []byte, err error) bool {
	if h.started {
		return false
	}
	if err == nil {
		h.started = true
		return false
	}
	var fe *tproxy.FrameError
	if !errors.As(err, &fe) {
		return false
	}
	h.bannerLines++
	h.bannerBytes += len(frame)
	if h.bannerLines > maxBannerLines || h.bannerBytes > maxBannerBytes {
		return false
	}
	h.c.skippedLine(frame, fe.Reason)
	return true
}

// readErr records the first frame error and turns a read error from a
// dying worker into the end of the stream.
func (h *hostStream) readErr(err error) error {
	var fe *tproxy.FrameError
	if err != nil && errors.As(err, &fe) {
		h.c.mu.Lock()
		if h.c.readErr == nil {
			h.c.readErr = err
		}
		h.c.mu.Unlock()
	}
	if err != nil && !errors.Is(err, io.EOF) && fe == nil {
		// A read error from a dying worker is the end of the stream.
		return io.EOF
	}
	return err
}

// WriteObject writes what jsonrpc2 sends: requests, and error replies to
// requests from the worker, which the host does not serve.
func (h *hostStream) WriteObject(v any) error { return h.s.WriteObject(v) }

func (h *hostStream) Close() error { return h.c.proc.CloseWrite() }

// debugLogger routes jsonrpc2's own messages to the logger at debug level.
type debugLogger struct{ l *slog.Logger }

func (d debugLogger) Printf(format string, v ...any) {
	d.l.Debug(fmt.Sprintf(format, v...))
}
