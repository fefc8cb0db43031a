package wiretest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/tproxy/tproxy/transport"
)

// Check selects the directions a tap validates.
type Check uint8

const (
	// HostFrames validates the frames the host writes. Alone, it is for a
	// Go host talking to a fake worker that misbehaves on purpose.
	HostFrames Check = 1 << iota
	// WorkerFrames validates the frames the worker writes. Alone, it is
	// for a Go worker driven by a test's hand-written frames, some of
	// them wrong on purpose.
	WorkerFrames
	// Both validates both directions: the Go host talking to the Go
	// worker.
	Both = HostFrames | WorkerFrames
)

// maxFrame bounds how much of one line a tap buffers. Longer lines are
// not validated: the caps of both sides are far below it, so such a line
// is refused by its receiver anyway, and a tap must not hold a runaway
// stream in memory.
const maxFrame = 64 << 20

// maxReports is how many failures one connection reports; the rest would
// repeat the first ones and bury the test's own output.
const maxReports = 10

// quoteLen is how much of a failing frame, and of the validator's
// explanation, a report quotes.
const quoteLen = 2048

// binding is where the taps of one wrapper report: the test that made
// them while it runs, the process otherwise.
type binding struct {
	mu sync.Mutex
	tb testing.TB // nil for an unbound tap, and once the test ended
	// site says where the tap was made, so that a report that cannot go
	// to a test still names the one that made it.
	site string
}

// bind returns a binding to tb, which may be nil. It must be called from
// the test's goroutine (it registers a Cleanup), before the test ends.
func bind(tb testing.TB) *binding {
	b := &binding{tb: tb, site: site()}
	if tb != nil {
		tb.Cleanup(func() {
			// A worker may write after its test ended (a goroutine
			// draining a pipe); testing panics on a report then, so
			// later reports go to the process.
			b.mu.Lock()
			b.tb = nil
			b.mu.Unlock()
		})
	}
	return b
}

func (b *binding) report(msg string) {
	b.mu.Lock()
	defer b.mu.Unlock() // held across Errorf, so the Cleanup waits for it
	if b.tb != nil {
		b.tb.Errorf("%s", msg)
		return
	}
	unbound.add("(tap made by " + b.site + ")\n" + msg)
}

// unbound collects the reports of taps without a test, for Main.
var unbound collector

type collector struct {
	mu   sync.Mutex
	msgs []string
}

func (u *collector) add(msg string) {
	u.mu.Lock()
	u.msgs = append(u.msgs, msg)
	u.mu.Unlock()
	// At once too, so that with -v it shows beside the test that ran.
	fmt.Fprintf(os.Stderr, "--- wiretest: %s\n", msg)
}

// Unbound returns the reports of taps made without a testing.TB (or whose
// test had ended) so far.
func Unbound() []string {
	unbound.mu.Lock()
	defer unbound.mu.Unlock()
	return append([]string(nil), unbound.msgs...)
}

// Main wraps a test binary's testing.M (or goleak's TestingM) so that the
// run fails when a tap made without a testing.TB saw a frame that does not
// validate: such a tap is made where no test is at hand, in a helper that
// builds a transport, and this is where its reports turn into a failure.
// Use it as goleak.VerifyTestMain(wiretest.Main(m)) or
// os.Exit(wiretest.Main(m).Run()).
func Main(m interface{ Run() int }) interface{ Run() int } { return mainM{m} }

type mainM struct{ m interface{ Run() int } }

func (m mainM) Run() int {
	code := m.m.Run()
	if msgs := Unbound(); len(msgs) > 0 {
		fmt.Fprintf(os.Stderr, "wiretest: %d frame(s) did not validate against docs/schema:\n", len(msgs))
		for i, msg := range msgs {
			if i == 3*maxReports {
				fmt.Fprintf(os.Stderr, "... and %d more\n", len(msgs)-i)
				break
			}
			fmt.Fprintf(os.Stderr, "%s\n", msg)
		}
		fmt.Println("FAIL (wiretest)")
		if code == 0 {
			code = 1
		}
	}
	return code
}

// site describes the caller of the wiretest function that made a tap, and
// the test function up its stack.
func site() string {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	var first, test string
	for {
		fr, more := frames.Next()
		if !strings.Contains(fr.Function, "/internal/wiretest.") {
			loc := fmt.Sprintf("%s at %s:%d", shortFunc(fr.Function), filepath.Base(fr.File), fr.Line)
			if first == "" {
				first = loc
			}
			name := shortFunc(fr.Function)
			if _, after, ok := strings.Cut(name, "."); ok {
				for _, p := range []string{"Test", "Benchmark", "Fuzz", "Example"} {
					if strings.HasPrefix(after, p) {
						test = loc
					}
				}
			}
			if test != "" {
				break
			}
		}
		if !more {
			break
		}
	}
	if test == "" || test == first {
		return first
	}
	return first + ", in " + test
}

// shortFunc drops the import path of a function's package.
func shortFunc(f string) string {
	if i := strings.LastIndexByte(f, '/'); i >= 0 {
		return f[i+1:]
	}
	return f
}

// Tap validates the frames of one connection as they pass: it reassembles
// the lines of each direction from chunks of any size and validates each
// line as a frame of the side that wrote it. It remembers the methods of
// the host's requests by id, since a response is validated against the
// result schema of its request's method.
//
// The wrappers Transport, Serve and Conn make and feed taps; NewTap is
// for a connection they do not fit.
type Tap struct {
	b     *binding
	check Check

	mu       sync.Mutex
	methods  map[string]string // IDKey → method of the host's requests
	reported int

	hostMu, workerMu sync.Mutex
	host, worker     splitter
}

// NewTap returns a tap that validates the directions check names and
// reports a frame that does not validate with tb.Errorf, or, if tb is nil,
// to the process (see Main). Call it from the test's goroutine.
func NewTap(tb testing.TB, check Check) *Tap { return newTap(bind(tb), check) }

func newTap(b *binding, check Check) *Tap {
	return &Tap{b: b, check: check, methods: map[string]string{}}
}

// HostWrote takes bytes the host wrote, in order, in chunks of any size.
// Call it before the bytes reach the worker, so that the methods of the
// requests are known when their responses come.
func (t *Tap) HostWrote(p []byte) {
	if t.check&Both == 0 {
		return
	}
	t.hostMu.Lock()
	defer t.hostMu.Unlock()
	t.host.write(p, t.hostLine)
}

// WorkerWrote takes bytes the worker wrote, in order, in chunks of any
// size.
func (t *Tap) WorkerWrote(p []byte) {
	if t.check&WorkerFrames == 0 {
		return
	}
	t.workerMu.Lock()
	defer t.workerMu.Unlock()
	t.worker.write(p, t.workerLine)
}

// trackRequests reports whether the host's frames must be read although
// they are not validated: their requests' methods select the schemas of
// the worker's responses.
func (t *Tap) trackRequests() bool { return t.check&WorkerFrames != 0 }

func (t *Tap) hostLine(line []byte) {
	var f *frame
	if t.check&HostFrames != 0 {
		var err error
		if f, err = validateHost(line); err != nil {
			t.fail("the host", "host-to-worker.schema.json", line, err)
		}
	} else {
		f, _ = decode(line)
	}
	if f != nil && f.isRequest() && t.trackRequests() {
		t.mu.Lock()
		t.methods[f.idKey] = f.method
		t.mu.Unlock()
	}
}

func (t *Tap) workerLine(line []byte) {
	method := ""
	f, err := validateWorker(line, func(key string) string {
		t.mu.Lock()
		defer t.mu.Unlock()
		method = t.methods[key]
		return method
	})
	if err != nil {
		schema := "worker-to-host.schema.json"
		if method != "" {
			schema += " and " + method + ".response.schema.json"
		}
		t.fail("the worker", schema, line, err)
	}
	if f != nil && f.method == "" && f.idKey != "" {
		// Ids are unique per connection: a response ends its request.
		t.mu.Lock()
		delete(t.methods, f.idKey)
		t.mu.Unlock()
	}
}

func (t *Tap) fail(who, schema string, line []byte, err error) {
	t.mu.Lock()
	t.reported++
	n := t.reported
	t.mu.Unlock()
	switch {
	case n > maxReports+1:
		return
	case n == maxReports+1:
		t.b.report(fmt.Sprintf("wiretest: more frames of this connection do not validate; only the first %d are reported", maxReports))
		return
	}
	t.b.report(fmt.Sprintf("wiretest: %s wrote a frame that does not validate against docs/schema/%s:\nframe: %s\nwhy: %s",
		who, schema, quote(line), capString(err.Error())))
}

// quote returns the start of a frame, readable: as it is when it is
// UTF-8 (a frame is one line), Go-quoted when it is not.
func quote(b []byte) string {
	more := ""
	if len(b) > quoteLen {
		more = fmt.Sprintf("... (%d bytes)", len(b))
		b = b[:quoteLen]
	}
	if !utf8.Valid(b) {
		return fmt.Sprintf("%q%s", b, more)
	}
	return string(b) + more
}

func capString(s string) string {
	if len(s) > 2*quoteLen {
		return s[:2*quoteLen] + "..."
	}
	return s
}

// splitter reassembles lines from chunks.
type splitter struct {
	buf  []byte
	skip bool // in a line over maxFrame, discarded up to its newline
}

// write passes each complete line in p, after what earlier writes left,
// to line, without its line ending; blank lines are skipped, as a receiver
// skips them. line must not keep the slice.
func (s *splitter) write(p []byte, line func([]byte)) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if !s.skip {
				s.buf = append(s.buf, p...)
				if len(s.buf) > maxFrame {
					s.buf, s.skip = s.buf[:0], true
				}
			}
			return
		}
		l := p[:i]
		if len(s.buf) > 0 {
			s.buf = append(s.buf, l...)
			l = s.buf
		}
		if !s.skip {
			l = bytes.TrimSuffix(l, []byte("\r"))
			if len(bytes.TrimSpace(l)) > 0 {
				line(l)
			}
		}
		s.buf, s.skip = s.buf[:0], false
		p = p[i+1:]
	}
}

// Transport wraps tr so that every worker it starts is tapped on the
// host's side of the pipe: Write is the host's frames, Read the worker's.
// It is for a worker the test cannot reach otherwise, such as a
// subprocess. Each Start gets a tap of its own, since request ids are
// per connection. tb may be nil (see NewTap). The Processes keep the
// optional methods Kill, Pid and TransportInfo of the ones tr starts.
func Transport(tb testing.TB, tr transport.Transport, check Check) transport.Transport {
	return &tapTransport{tr: tr, check: check, b: bind(tb)}
}

type tapTransport struct {
	tr    transport.Transport
	check Check
	b     *binding
}

func (t *tapTransport) Start(ctx context.Context) (transport.Process, error) {
	p, err := t.tr.Start(ctx)
	if err != nil {
		return nil, err
	}
	return wrapProcess(p, newTap(t.b, t.check)), nil
}

// process is a tapped Process.
type process struct {
	transport.Process
	tap *Tap
}

func (p *process) Read(b []byte) (int, error) {
	n, err := p.Process.Read(b)
	if n > 0 {
		p.tap.WorkerWrote(b[:n])
	}
	return n, err
}

func (p *process) Write(b []byte) (int, error) {
	p.tap.HostWrote(b) // before the worker can answer
	return p.Process.Write(b)
}

// Unwrap returns the Process the tap wraps, for a test that needs its
// concrete type.
func (p *process) Unwrap() transport.Process { return p.Process }

// The optional methods of a Process that a wrapper keeps.
type (
	pider  interface{ Pid() int }
	infoer interface{ TransportInfo() any }
)

// wrapProcess taps p, keeping its optional methods: the host kills a
// silent worker through Killer and records what TransportInfo tells in
// status.json, and tests ask subprocesses for their pid.
func wrapProcess(p transport.Process, tap *Tap) transport.Process {
	w := &process{Process: p, tap: tap}
	k, kill := p.(transport.Killer)
	d, pid := p.(pider)
	i, info := p.(infoer)
	switch {
	case kill && pid && info:
		return struct {
			*process
			transport.Killer
			pider
			infoer
		}{w, k, d, i}
	case kill && pid:
		return struct {
			*process
			transport.Killer
			pider
		}{w, k, d}
	case kill && info:
		return struct {
			*process
			transport.Killer
			infoer
		}{w, k, i}
	case pid && info:
		return struct {
			*process
			pider
			infoer
		}{w, d, i}
	case kill:
		return struct {
			*process
			transport.Killer
		}{w, k}
	case pid:
		return struct {
			*process
			pider
		}{w, d}
	case info:
		return struct {
			*process
			infoer
		}{w, i}
	}
	return w
}

// Serve wraps the Serve function of a transport.InMemory so that each
// worker it runs is tapped on the worker's side of the pipes (see Conn).
// tb may be nil (see NewTap).
func Serve(tb testing.TB, serve func(context.Context, io.ReadWriteCloser) error, check Check) func(context.Context, io.ReadWriteCloser) error {
	b := bind(tb)
	return func(ctx context.Context, rw io.ReadWriteCloser) error {
		return serve(ctx, wrapConn(rw, newTap(b, check)))
	}
}

// Conn taps the worker's end of a connection: what the worker reads is
// the host's frames, what it writes its own. The result keeps rw's
// CloseRead method, if any, which the Go worker uses to end its reads.
// tb may be nil (see NewTap).
func Conn(tb testing.TB, rw io.ReadWriteCloser, check Check) io.ReadWriteCloser {
	return wrapConn(rw, newTap(bind(tb), check))
}

type conn struct {
	io.ReadWriteCloser
	tap *Tap
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.ReadWriteCloser.Read(b)
	if n > 0 {
		c.tap.HostWrote(b[:n])
	}
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	c.tap.WorkerWrote(b)
	return c.ReadWriteCloser.Write(b)
}

type closeReadConn struct{ *conn }

func (c closeReadConn) CloseRead() error {
	return c.ReadWriteCloser.(interface{ CloseRead() error }).CloseRead()
}

func wrapConn(rw io.ReadWriteCloser, tap *Tap) io.ReadWriteCloser {
	c := &conn{ReadWriteCloser: rw, tap: tap}
	if _, ok := rw.(interface{ CloseRead() error }); ok {
		return closeReadConn{c}
	}
	return c
}
