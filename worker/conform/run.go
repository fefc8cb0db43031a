package conform

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/transport"
)

// check is a Check and the function that runs it.
type check struct {
	Check
	run func(c *checkRun)
}

// Bounds of the kit's own shutdown of a worker after a check, on top of
// the check's timeout.
const (
	// drainGrace is how long the kit reads the worker's last frames after
	// closing its stdin before it closes the worker through the
	// transport (whose ladder then runs).
	drainGrace = 3 * time.Second
	// releaseGrace bounds the wait for the kit's read loop and writes to
	// end once the transport closed the worker.
	releaseGrace = 5 * time.Second
)

// checkRun is one run of one check: the worker it started and the state
// of the conversation.
type checkRun struct {
	ctx      context.Context
	cfg      *config
	tr       transport.Transport
	section  string // the check's main section, for failures of the exchange itself
	deadline time.Time

	w       *workerConn
	nextID  int64
	pending map[string]pendingCall // requests sent and not answered, by idKey
	stash   map[string]*frame      // responses that came while the kit awaited another
	writes  sync.WaitGroup

	failure string
	stderr  string
}

type pendingCall struct {
	method string
	id     string // as JSON
}

// checkFailed is the panic value that ends a failed check; runCheck
// recovers it. Checks are written as straight-line scripts that stop at
// the first failure, as a test stops at t.Fatal.
type checkFailed struct{}

func runCheck(ctx context.Context, tr transport.Transport, cfg *config, ch check) Result {
	start := time.Now()
	c := &checkRun{
		ctx:      ctx,
		cfg:      cfg,
		tr:       tr,
		section:  strings.Split(ch.Section, ",")[0],
		deadline: start.Add(cfg.timeout),
		pending:  map[string]pendingCall{},
		stash:    map[string]*frame{},
	}
	func() {
		defer func() {
			if v := recover(); v != nil {
				if _, ok := v.(checkFailed); !ok {
					c.shutdown()
					panic(v)
				}
			}
		}()
		ch.run(c)
	}()
	c.shutdown()
	res := Result{Check: ch.Name, Section: ch.Section, Passed: c.failure == "", Detail: c.failure, Duration: time.Since(start)}
	if !res.Passed {
		res.Stderr = c.stderr
	}
	return res
}

// fail ends the check with detail, which starts with a section.
func (c *checkRun) fail(detail string) {
	if c.failure == "" {
		c.failure = detail
	}
	panic(checkFailed{})
}

// failf ends the check: "§8: " and the formatted message.
func (c *checkRun) failf(sec, format string, args ...any) {
	c.fail(sec + ": " + fmt.Sprintf(format, args...))
}

// failer returns a fail function for shapes, prefixing sec.
func (c *checkRun) failer(sec string) func(string) {
	return func(msg string) {
		if strings.HasPrefix(msg, "§") {
			c.fail(msg)
		}
		c.fail(sec + ": " + msg)
	}
}

// shape reads v, a value from the worker, as an object described by the
// field tables of section sec.
func (c *checkRun) shape(sec, what string, v any) shape {
	s, _ := asShape(what, v, c.failer(sec))
	return s
}

func (c *checkRun) timeout() string { return c.cfg.timeout.String() }

// start starts a worker for the check.
func (c *checkRun) start() {
	if c.w != nil {
		panic("conform: a check started two workers")
	}
	ctx, cancel := context.WithDeadline(c.ctx, c.deadline)
	defer cancel()
	p, err := c.tr.Start(ctx)
	if err != nil {
		c.fail("the worker did not start: " + err.Error())
	}
	c.w = newWorkerConn(p, c.cfg.maxFrame)
}

// startPinged starts a worker and makes the host's first request, a ping
// (§4), as every host does.
func (c *checkRun) startPinged() {
	c.start()
	c.ping("conform")
}

// ping pings the worker and checks the pong (§5.1).
func (c *checkRun) ping(data string) shape {
	f, _ := c.call("§5.1", tproxy.MethodPing, map[string]any{"data": data, "protocol": tproxy.ProtocolVersion})
	return c.pong(f, data)
}

// pong checks a ping's response against §5.1 and §4.
func (c *checkRun) pong(f *frame, echo string) shape {
	r := c.result("§5.1", f, "ping")
	if st := r.str("status"); st != "pong" {
		c.failf("§5.1", `ping result: status is %q, not "pong"`, st)
	}
	if e := r.str("echo"); e != echo {
		c.failf("§5.1", "ping result: echo is %q; want %q, the params' data", e, echo)
	}
	r.timestamp("timestamp")
	if p := r.integer("protocol"); p != tproxy.ProtocolVersion {
		c.failf("§4", "ping result: protocol is %d; this kit checks protocol %d", p, tproxy.ProtocolVersion)
	}
	w := r.object("worker")
	w.str("name")
	w.str("version")
	drivers := w.strings("drivers")
	for i := 1; i < len(drivers); i++ {
		if drivers[i-1] >= drivers[i] {
			c.failf("§5.1", "ping result: worker.drivers is not sorted (or has a duplicate): %q before %q", drivers[i-1], drivers[i])
		}
	}
	return r
}

// write writes b to the worker's stdin, bounded by the check's deadline:
// a worker that stops reading cannot hang the kit.
func (c *checkRun) write(b []byte) {
	done := make(chan error, 1)
	c.writes.Add(1)
	go func() {
		defer c.writes.Done()
		_, err := c.w.p.Write(b)
		done <- err
	}()
	timer := time.NewTimer(time.Until(c.deadline))
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			c.failf(c.section, "writing to the worker's stdin failed: %v; the worker stopped reading%s", err, c.exitNote())
		}
	case <-timer.C:
		c.failf(c.section, "the worker did not read %d bytes of input within %s", len(b), c.timeout())
	case <-c.ctx.Done():
		c.fail("interrupted: " + c.ctx.Err().Error())
	}
}

// writeLine writes one line as is, followed by "\n".
func (c *checkRun) writeLine(s string) { c.write([]byte(s + "\n")) }

// request is a request the kit sent.
type request struct {
	key    string // idKey of its id
	id     string // its id as JSON
	method string
}

func (r request) String() string { return fmt.Sprintf("%s (id %s)", r.method, r.id) }

// send sends a request with the next integer id. params nil sends no
// params member.
func (c *checkRun) send(method string, params any) request {
	c.nextID++
	return c.sendID(strconv.FormatInt(c.nextID, 10), method, params)
}

// sendID sends a request with id, given as JSON.
func (c *checkRun) sendID(id, method string, params any) request {
	var b strings.Builder
	m, _ := json.Marshal(method)
	fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":%s,"method":%s`, id, m)
	if params != nil {
		p, err := json.Marshal(params)
		if err != nil {
			panic("conform: encoding params: " + err.Error())
		}
		fmt.Fprintf(&b, `,"params":%s`, p)
	}
	b.WriteString("}\n")
	v, err := decodeJSON([]byte(id))
	if err != nil {
		panic("conform: bad request id " + id)
	}
	r := request{key: idKey(v), id: id, method: method}
	c.pending[r.key] = pendingCall{method: method, id: id}
	c.write([]byte(b.String()))
	return r
}

// expect registers a response the kit awaits to a line it wrote itself
// (an id-null answer to garbage, say) without sending anything.
func (c *checkRun) expect(id, what string) request {
	v, err := decodeJSON([]byte(id))
	if err != nil {
		panic("conform: bad request id " + id)
	}
	r := request{key: idKey(v), id: id, method: what}
	c.pending[r.key] = pendingCall{method: what, id: id}
	return r
}

// recv returns the next frame, or eof true once the worker's output has
// ended. A frame the read loop judged bad fails the check.
func (c *checkRun) recv(sec, waitingFor string) (f *frame, eof bool) {
	if c.w.ended {
		return nil, true
	}
	timer := time.NewTimer(time.Until(c.deadline))
	defer timer.Stop()
	select {
	case f, ok := <-c.w.frames:
		if !ok || f.eof != nil {
			c.w.ended = true
			return nil, true
		}
		if f.bad != "" {
			c.fail(f.bad)
		}
		return f, false
	case <-timer.C:
		c.failf(sec, "no %s within %s", waitingFor, c.timeout())
	case <-c.ctx.Done():
		c.fail("interrupted: " + c.ctx.Err().Error())
	}
	panic("unreachable")
}

// next is recv for a frame the check needs: the end of the output fails.
func (c *checkRun) next(sec, waitingFor string) *frame {
	f, eof := c.recv(sec, waitingFor)
	if eof {
		c.failf(sec, "no %s: the worker ended its output%s", waitingFor, c.exitNote())
	}
	return f
}

// exitNote describes how the worker exited, if it exits soon, for a
// message about an output that ended or an input that broke.
func (c *checkRun) exitNote() string {
	d := min(2*time.Second, time.Until(c.deadline))
	timer := time.NewTimer(max(d, 0))
	defer timer.Stop()
	select {
	case <-c.w.p.Done():
		return " and exited (" + c.w.p.Exit().String() + ")"
	case <-timer.C:
		return ""
	}
}

// await waits for the response to one of reqs and returns it with the
// notifications that arrived before it. A response to a request the kit
// has not sent, or one answered already, fails the check (§3: ids are
// echoed exactly); one to another pending request is kept for its own
// await.
func (c *checkRun) await(sec string, reqs ...request) (*frame, []*frame) {
	return c.awaitFor(sec, "", reqs...)
}

// awaitFor is await with a description of what the kit waits for, for the
// message when it does not come; "" describes the requests.
func (c *checkRun) awaitFor(sec, waitingFor string, reqs ...request) (*frame, []*frame) {
	for _, r := range reqs {
		if f, ok := c.stash[r.key]; ok {
			delete(c.stash, r.key)
			delete(c.pending, r.key)
			return f, nil
		}
	}
	what := make([]string, len(reqs))
	for i, r := range reqs {
		what[i] = r.String()
	}
	if waitingFor == "" {
		waitingFor = "response to " + strings.Join(what, " or ")
	}
	var notes []*frame
	for {
		f := c.next(sec, waitingFor)
		if f.method != "" {
			notes = append(notes, f)
			continue
		}
		k := idKey(f.id)
		for _, r := range reqs {
			if r.key == k {
				delete(c.pending, k)
				return f, notes
			}
		}
		if _, ok := c.pending[k]; ok {
			c.stash[k] = f
			continue
		}
		if f.id == nil && f.err != nil && len(reqs) == 1 {
			c.failf("§3", "%s was answered %s with id null, as a request whose id could not be read; a string or number id is accepted and echoed", reqs[0], f.err)
		}
		c.unexpected(f)
	}
}

// unexpected fails the check on a response to no pending request.
func (c *checkRun) unexpected(f *frame) {
	hint := ""
	for _, p := range c.pending {
		v, _ := decodeJSON([]byte(p.id))
		if looseIDKey(v) == looseIDKey(f.id) {
			hint = fmt.Sprintf(" (the kit awaits the response to %s (id %s): an id is echoed with its JSON type)", p.method, p.id)
		}
	}
	c.failf("§3", "the worker answered id %s, which the kit did not send or had its answer to already%s", idText(f.id), hint)
}

// call sends a request and awaits its response.
func (c *checkRun) call(sec, method string, params any) (*frame, []*frame) {
	return c.await(sec, c.send(method, params))
}

// result fails unless f is a successful response, and returns its result.
func (c *checkRun) result(sec string, f *frame, what string) shape {
	if f.err != nil {
		c.failf(sec, "%s failed: %s", what, f.err)
	}
	return c.shape(sec, what+" result", f.result)
}

// codeNames names the codes of §7 for messages.
var codeNames = map[int64]string{
	tproxy.CodeParseError:       "parse error",
	tproxy.CodeInvalidRequest:   "invalid request",
	tproxy.CodeMethodNotFound:   "method not found",
	tproxy.CodeInvalidParams:    "invalid params",
	tproxy.CodeInternalError:    "internal error",
	tproxy.CodeRequestCancelled: "request cancelled",
	tproxy.CodeNotPrepared:      "not prepared",
	tproxy.CodeSessionMismatch:  "session mismatch",
	tproxy.CodeUnknownDriver:    "unknown driver",
	tproxy.CodeStepFailed:       "step failed",
	tproxy.CodeInputUnavailable: "input unavailable",
}

func codeText(code int64) string {
	if n, ok := codeNames[code]; ok {
		return fmt.Sprintf("%d (%s)", code, n)
	}
	return strconv.FormatInt(code, 10)
}

// wantError fails unless f is an error response with code.
func (c *checkRun) wantError(sec string, f *frame, what string, code int64) *rpcError {
	if f.err == nil {
		c.failf(sec, "%s succeeded; want error %s", what, codeText(code))
	}
	if f.err.code != code {
		c.failf(sec, "%s answered %s; want error %s", what, f.err, codeText(code))
	}
	return f.err
}

// callError sends a request and fails unless it is answered with code.
func (c *checkRun) callError(sec, what string, code int64, method string, params any) (*rpcError, []*frame) {
	f, notes := c.call(sec, method, params)
	return c.wantError(sec, f, what, code), notes
}

// shutdown ends the check's worker: it closes the worker's stdin, reads
// what the worker still writes (judging it like the rest) until its output
// ends or drainGrace passes, then closes it through the transport and
// waits for the kit's own goroutines.
func (c *checkRun) shutdown() {
	w := c.w
	if w == nil {
		return
	}
	defer func() {
		c.stderr = w.p.StderrTail()
	}()
	if c.failure != "" && len(c.pending) > 0 {
		// A failed check may leave a long step running (conform.sleep
		// 30000 ms); cancel what is pending so that a conforming worker
		// can exit at once on the end of its input.
		for _, p := range c.pending {
			c.tryWrite(fmt.Sprintf(`{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":%s}}`+"\n", p.id))
		}
	}
	w.p.CloseWrite()
	grace := time.NewTimer(drainGrace)
	defer grace.Stop()
drain:
	for !w.ended {
		select {
		case f, ok := <-w.frames:
			if !ok || f.eof != nil {
				break drain
			}
			switch {
			case c.failure != "":
			case f.bad != "":
				c.failure = f.bad
			case f.method == "":
				if _, ok := c.pending[idKey(f.id)]; !ok {
					c.failure = fmt.Sprintf("§3: the worker answered id %s, which the kit did not send or had its answer to already", idText(f.id))
				}
			}
		case <-grace.C:
			break drain
		case <-c.ctx.Done():
			break drain
		}
	}
	close(w.stop)
	w.p.Close()
	released := make(chan struct{})
	go func() {
		<-w.readDone
		c.writes.Wait()
		close(released)
	}()
	timer := time.NewTimer(releaseGrace)
	defer timer.Stop()
	select {
	case <-released:
	case <-timer.C:
		// The transport's Close did not unblock its Read or Write; the
		// goroutines end whenever it does.
	}
}

// tryWrite writes s if the worker takes it within a second; for cleanup.
func (c *checkRun) tryWrite(s string) {
	done := make(chan struct{})
	c.writes.Add(1)
	go func() {
		defer c.writes.Done()
		defer close(done)
		c.w.p.Write([]byte(s))
	}()
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
}
