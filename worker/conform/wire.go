package conform

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/transport"
)

// frame is one line the worker wrote, as the kit judged it.
type frame struct {
	n  int       // the line's number on the worker's stdout, from 1
	at time.Time // when its newline arrived

	method string         // a notification's method; "" for a response
	params map[string]any // a notification's params, if an object

	id     any       // a response's id: string, json.Number or nil
	result any       // a response's result, when it has one
	err    *rpcError // a response's error, when it has one

	// bad says, section first, why the line is not acceptable; the check
	// that receives it fails with it.
	bad string
	// eof is set on the last frame: the worker's output ended (io.EOF)
	// or could not be read.
	eof error
}

// rpcError is a response's error member (§7).
type rpcError struct {
	code    int64
	message string
	data    any
}

func (e *rpcError) String() string {
	return fmt.Sprintf("error %d %q", e.code, e.message)
}

// event returns a notification's event name, or "" if it is no event.
func (f *frame) event() string {
	if f.method != tproxy.MethodEvent {
		return ""
	}
	name, _ := f.params["name"].(string)
	return name
}

// metric returns a notification's metric name, or "" if it is no metric.
func (f *frame) metric() string {
	if f.method != tproxy.MethodMetric {
		return ""
	}
	name, _ := f.params["name"].(string)
	return name
}

// stepID returns a notification's step_id member, or "".
func (f *frame) stepID() string {
	id, _ := f.params["step_id"].(string)
	return id
}

// describe names a notification for messages: `event "step_start"`.
func (f *frame) describe() string {
	switch f.method {
	case tproxy.MethodEvent, tproxy.MethodMetric:
		name, _ := f.params["name"].(string)
		return fmt.Sprintf("%s %q", f.method, name)
	}
	return f.method
}

// quoteLen is how much of a bad line a message quotes.
const quoteLen = 120

func quote(b []byte) string {
	if len(b) > quoteLen {
		return fmt.Sprintf("%q...", b[:quoteLen])
	}
	return fmt.Sprintf("%q", b)
}

// workerConn is the kit's end of one worker's protocol channel. A read
// loop reassembles the worker's stdout into lines with a cap of its own,
// judges each line and hands it to the check through frames; the check
// writes to the worker directly.
type workerConn struct {
	p        transport.Process
	maxFrame int
	frames   chan *frame   // closed by the read loop when it ends
	stop     chan struct{} // closed to make the read loop end
	readDone chan struct{}
	ended    bool // the check has seen the end of the output
}

func newWorkerConn(p transport.Process, maxFrame int) *workerConn {
	w := &workerConn{
		p:        p,
		maxFrame: maxFrame,
		frames:   make(chan *frame, 256),
		stop:     make(chan struct{}),
		readDone: make(chan struct{}),
	}
	go w.read()
	return w
}

// read is the read loop. It never buffers more than the cap of one line
// (§2), so a worker that floods its stdout without a newline cannot
// exhaust the kit's memory.
func (w *workerConn) read() {
	defer close(w.readDone)
	defer close(w.frames)
	buf := make([]byte, 64<<10)
	var (
		line []byte
		over int // bytes of the line being discarded; > 0 once over the cap
		n    int
	)
	for {
		k, err := w.p.Read(buf)
		chunk := buf[:k]
		for len(chunk) > 0 {
			i := bytes.IndexByte(chunk, '\n')
			part := chunk
			if i >= 0 {
				part = chunk[:i]
			}
			switch {
			case over > 0:
				over += len(part)
			case len(line)+len(part) > w.maxFrame+1: // +1: a '\r' before the '\n'
				over = len(line) + len(part)
				line = line[:0]
			default:
				line = append(line, part...)
			}
			if i < 0 {
				break
			}
			chunk = chunk[i+1:]
			n++
			var f *frame
			switch {
			case over > 0:
				f = &frame{bad: fmt.Sprintf("§2: line %d of the worker's stdout is %d bytes or more, over the frame cap of %d", n, over, w.maxFrame)}
				over = 0
			default:
				l := bytes.TrimSuffix(line, []byte("\r"))
				if len(bytes.TrimSpace(l)) == 0 {
					line = line[:0]
					continue // §2: a receiver skips blank lines
				}
				if len(l) > w.maxFrame {
					f = &frame{bad: fmt.Sprintf("§2: line %d of the worker's stdout is %d bytes, over the frame cap of %d", n, len(l), w.maxFrame)}
				} else {
					f = parseFrame(l)
					if f.bad != "" {
						f.bad = fmt.Sprintf("%s (line %d of the worker's stdout: %s)", f.bad, n, quote(l))
					}
				}
			}
			f.n, f.at = n, time.Now()
			line = line[:0]
			if !w.deliver(f) {
				return
			}
		}
		if err != nil {
			if len(line) > 0 || over > 0 {
				if !w.deliver(&frame{n: n + 1, at: time.Now(), bad: fmt.Sprintf("§2: the worker's stdout ended inside a line, without its newline: %s", quote(line))}) {
					return
				}
			}
			w.deliver(&frame{n: n + 1, at: time.Now(), eof: err})
			return
		}
	}
}

func (w *workerConn) deliver(f *frame) bool {
	select {
	case w.frames <- f:
		return true
	case <-w.stop:
		return false
	}
}

// parseFrame judges one line from the worker: a JSON-RPC 2.0 message
// (§3) and, for the protocol's notifications, the shape of §6.
func parseFrame(line []byte) *frame {
	f := &frame{}
	if !utf8.Valid(line) {
		f.bad = "§2: a line from the worker is not valid UTF-8"
		return f
	}
	if !json.Valid(line) {
		f.bad = "§2: a line from the worker is not JSON; only protocol messages may appear on stdout"
		return f
	}
	v, err := decodeJSON(line)
	if err != nil {
		f.bad = fmt.Sprintf("§2: a line from the worker cannot be decoded: %v", err)
		return f
	}
	var problem string
	fail := func(msg string) {
		if problem == "" {
			problem = msg
		}
	}
	defer func() {
		if problem != "" {
			f.bad = problem
		}
	}()
	msg, ok := asShape("§3: a message from the worker", v, fail)
	if !ok {
		return f
	}
	if v, ok := msg.m["jsonrpc"]; !ok || v != "2.0" {
		fail(fmt.Sprintf(`§3: a message from the worker has "jsonrpc" %s; it must be "2.0"`, jsonType(v)))
		return f
	}
	if m, ok := msg.m["method"]; ok {
		name, ok := m.(string)
		if !ok {
			fail(fmt.Sprintf(`§3: a message from the worker has "method" %s, not a string`, jsonType(m)))
			return f
		}
		if id, ok := msg.m["id"]; ok {
			fail(fmt.Sprintf("§1: the worker sent a request (method %q, id %s); a worker sends no requests", name, idText(id)))
			return f
		}
		f.method = name
		if p, ok := msg.m["params"]; ok && p != nil {
			pm, ok := p.(map[string]any)
			if !ok {
				fail(fmt.Sprintf("§3: the worker's %q notification has params %s, not an object", name, jsonType(p)))
				return f
			}
			f.params = pm
		}
		validateNotification(f, fail)
		return f
	}
	id, ok := msg.m["id"]
	if !ok {
		fail("§3: a message from the worker has neither a method nor an id")
		return f
	}
	switch id.(type) {
	case string, json.Number, nil:
	default:
		fail(fmt.Sprintf("§3: a response from the worker has id %s; an id is a string, a number or null", jsonType(id)))
		return f
	}
	f.id = id
	res, hasResult := msg.m["result"]
	e, hasError := msg.m["error"]
	switch {
	case hasResult && hasError:
		fail(fmt.Sprintf("§3: the response to id %s has both a result and an error", idText(id)))
	case !hasResult && !hasError:
		fail(fmt.Sprintf("§3: the response to id %s has neither a result nor an error", idText(id)))
	case hasResult:
		f.result = res
	default:
		es, ok := asShape(fmt.Sprintf("§7: the error of the response to id %s", idText(id)), e, fail)
		if !ok {
			return f
		}
		f.err = &rpcError{code: es.integer("code"), message: es.str("message"), data: es.m["data"]}
	}
	return f
}

// validateNotification checks the params of the protocol's notifications
// against §6. Other methods are let through: a newer minor version may add
// notifications a receiver ignores (§15).
func validateNotification(f *frame, fail func(string)) {
	var sec string
	switch f.method {
	case tproxy.MethodEvent:
		sec = "§6.1"
	case tproxy.MethodMetric:
		sec = "§6.2"
	case tproxy.MethodLog:
		sec = "§6.3"
	case tproxy.MethodHeartbeat:
		sec = "§6.4"
	default:
		return
	}
	if f.params == nil {
		fail(fmt.Sprintf("%s: the worker's %q notification has no params", sec, f.method))
		return
	}
	p, _ := asShape(fmt.Sprintf("%s: %s notification", sec, f.method), f.params, fail)
	if name, ok := f.params["name"].(string); ok && f.method != tproxy.MethodLog && f.method != tproxy.MethodHeartbeat {
		p.what = fmt.Sprintf("%s: %s %q", sec, f.method, name)
	}
	p.timestamp("timestamp")
	p.optID("step_id")
	switch f.method {
	case tproxy.MethodEvent:
		p.nonEmpty("name")
		p.optObject("data")
	case tproxy.MethodMetric:
		p.nonEmpty("name")
		p.number("value")
		p.optStr("unit")
		if tags, ok := p.optObject("tags"); ok {
			for k := range tags.m {
				tags.str(k)
			}
		}
	case tproxy.MethodLog:
		p.str("level")
		p.str("message")
		p.optObject("attrs")
	}
}
