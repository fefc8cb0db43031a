package e2b_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/transport/e2b"
)

// hangGuard bounds the waits below. It guards against hangs and measures
// nothing; it is well under the fresh 30 s the kill of a failed start
// used to get, and far over the grace the tests set.
const hangGuard = 10 * time.Second

// testGrace is the CleanupGrace of the tests.
const testGrace = 100 * time.Millisecond

type startResult struct {
	p   transport.Process
	err error
	at  time.Time
}

// startAsync runs tr.Start(ctx) in the background.
func startAsync(ctx context.Context, tr transport.Transport) <-chan startResult {
	ch := make(chan startResult, 1)
	go func() {
		p, err := tr.Start(ctx)
		ch <- startResult{p, err, time.Now()}
	}()
	return ch
}

// waitClosed waits for ch to be closed; the bound only guards against
// hangs.
func waitClosed(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hangGuard):
		t.Fatalf("%s had not arrived after %v", what, hangGuard)
	}
}

// endOf returns when ctx ended.
func endOf(ctx context.Context) func() time.Time {
	var at time.Time
	ended := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { at = time.Now(); close(ended) })
	return func() time.Time {
		<-ended
		stop()
		return at
	}
}

// ranOut is a context whose end, when its parent is cancelled, is its
// deadline passing: context.DeadlineExceeded at a moment the test picks.
// It hides its parent's values, the parent's cancelCtx among them, so
// that the contexts derived from it end with its Err, not the parent's.
type ranOut struct{ context.Context }

func (r ranOut) Err() error {
	if r.Context.Err() != nil {
		return context.DeadlineExceeded
	}
	return nil
}

func (ranOut) Value(any) any { return nil }

// TestStartCleanupBoundedByCallerDeadline: a Start whose context ends
// while the sandbox is being set up, against a control plane that does
// not answer the kill, returns within CleanupGrace of the context's end,
// whether the context was cancelled or ran out.
func TestStartCleanupBoundedByCallerDeadline(t *testing.T) {
	for _, tt := range []struct {
		name string
		ctx  func(t *testing.T, arrived <-chan struct{}) context.Context
	}{
		{"cancelled", func(t *testing.T, arrived <-chan struct{}) context.Context {
			ctx, cancel := context.WithCancel(t.Context())
			t.Cleanup(cancel)
			go func() {
				select {
				case <-arrived:
					cancel()
				case <-ctx.Done():
				}
			}()
			return ctx
		}},
		{"deadline", func(t *testing.T, arrived <-chan struct{}) context.Context {
			// A fixed timeout could run out in the sandbox's creation on a
			// slow machine, before there is a sandbox to clean up; this
			// one runs out once the upload has stalled.
			ctx, cancel := context.WithCancel(t.Context())
			t.Cleanup(cancel)
			go func() {
				select {
				case <-arrived:
					cancel()
				case <-ctx.Done():
				}
			}()
			return ranOut{ctx}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, fakeOptions())
			upload := srv.Stall(e2bfake.OpUpload) // the start hangs in the upload ...
			kill := srv.Stall(e2bfake.OpKill)     // ... and the kill is never answered
			tr := newE2B(t, srv, "worker")
			tr.CleanupGrace = testGrace
			ctx := tt.ctx(t, upload.Arrived())
			ended := endOf(ctx)
			res := startAsync(ctx, tr)
			var r startResult
			select {
			case r = <-res:
			case <-time.After(hangGuard):
				t.Fatalf("Start had not returned %v after it began", hangGuard)
			}
			if r.err == nil {
				r.p.Close()
				t.Fatal("Start succeeded")
			}
			t.Logf("Start returned %v after its context ended: %v", r.at.Sub(ended()), r.err)
			if !errors.Is(r.err, ctx.Err()) {
				t.Errorf("err = %v, want the context's error %v", r.err, ctx.Err())
			}
			select {
			case <-kill.Arrived():
			default:
				t.Error("the failed start did not try to kill its sandbox")
			}
		})
	}
}

// TestPoolStartCleanupBoundedByCallerDeadline: a pool's Start whose
// context ends while the worker is being started in a warm sandbox,
// against a control plane that does not answer the kill, returns within
// CleanupGrace of the context's end; the kill goes on in the background
// and Close waits for it, so the sandbox is not left behind.
func TestPoolStartCleanupBoundedByCallerDeadline(t *testing.T) {
	srv := newServer(t, fakeOptions())
	tr := newE2B(t, srv, "worker")
	tr.CleanupGrace = testGrace
	pool, err := e2b.NewPool(t.Context(), tr, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	warm := srv.Sandboxes()
	start := srv.Stall(e2bfake.OpStart) // the worker's start hangs ...
	kill := srv.Stall(e2bfake.OpKill)   // ... and the kill is never answered
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ended := endOf(ctx)
	res := startAsync(ctx, pool)
	waitClosed(t, "the worker's start", start.Arrived())
	cancel()
	var r startResult
	select {
	case r = <-res:
	case <-time.After(hangGuard):
		t.Fatalf("Pool.Start had not returned %v after its context ended", hangGuard)
	}
	if r.err == nil {
		r.p.Close()
		t.Fatal("Start succeeded")
	}
	t.Logf("Pool.Start returned %v after its context ended: %v", r.at.Sub(ended()), r.err)
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", r.err)
	}
	waitClosed(t, "the sandbox's kill", kill.Arrived())
	start.Release()
	kill.Release()
	if err := pool.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if live := srv.Sandboxes(); len(live) != 0 {
		t.Errorf("sandboxes left after Close: %v (the session's was %v)", live, warm)
	}
}

// TestCloseAfterKillBoundedByGrace: once Kill was called, Close waits at
// most CleanupGrace for a control plane that does not answer the sandbox's
// kill, so a host that kills because its deadline has passed is not held
// 30 s more by Close.
func TestCloseAfterKillBoundedByGrace(t *testing.T) {
	srv := newServer(t, fakeOptions())
	tr := newE2B(t, srv, "worker")
	tr.CleanupGrace = testGrace
	p, err := tr.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	kill := srv.Stall(e2bfake.OpKill)
	if err := p.(transport.Killer).Kill(); err != nil {
		t.Errorf("Kill: %v", err)
	}
	closed := make(chan error, 1)
	t0 := time.Now()
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		t.Logf("Close after Kill returned after %v: %v", time.Since(t0), err)
		if err == nil {
			t.Error("Close reported no error though the sandbox's kill was not answered")
		}
	case <-time.After(hangGuard):
		t.Fatalf("Close after Kill had not returned after %v", hangGuard)
	}
	select {
	case <-kill.Arrived():
	default:
		t.Error("Close did not try to kill the sandbox")
	}
}

// TestHostStartBoundedWhenKillHangs: host.Start whose context ends, while
// E2B sets the sandbox up or during the handshake, returns within the
// grace even though the control plane never answers the sandbox's kill.
func TestHostStartBoundedWhenKillHangs(t *testing.T) {
	for _, tt := range []struct {
		phase, mode string
		stall       e2bfake.Op
	}{
		{"sandbox setup", "worker", e2bfake.OpUpload},
		{"handshake", "term-ok", ""}, // prints no protocol: the ping is never answered
	} {
		t.Run(tt.phase, func(t *testing.T) {
			srv := newServer(t, fakeOptions())
			srv.Stall(e2bfake.OpKill)
			var arrived <-chan struct{}
			if tt.stall != "" {
				arrived = srv.Stall(tt.stall).Arrived()
			}
			tr := newE2B(t, srv, tt.mode)
			tr.CleanupGrace = testGrace
			// term-ok writes no protocol, on purpose: the host's frames only.
			check := wiretest.HostFrames
			if tt.mode == "worker" {
				check = wiretest.Both
			}
			tapTr := wiretest.Transport(t, tr, check)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			sink := newSignalSink("protocol_warning") // the worker's "ready" line
			go func() {
				select {
				case <-arrived:
				case <-sink.seen:
				case <-ctx.Done():
					return
				}
				cancel()
			}()
			ended := endOf(ctx)
			res := make(chan error, 1)
			go func() {
				c, err := host.Start(ctx, tapTr, host.WithSink(sink), host.WithLogger(slog.New(slog.DiscardHandler)))
				if err == nil {
					c.Close()
				}
				res <- err
			}()
			select {
			case err := <-res:
				t.Logf("host.Start returned %v after its context ended: %v", time.Since(ended()), err)
				if !errors.Is(err, context.Canceled) {
					t.Errorf("err = %v, want context.Canceled", err)
				}
			case <-time.After(hangGuard):
				t.Fatalf("host.Start had not returned after %v", hangGuard)
			}
		})
	}
}

// countingBody signals once a request body has been read past a mark.
type countingBody struct {
	r      io.ReadCloser
	n      int64
	mark   int64
	passed func()
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n >= b.mark && b.passed != nil {
		b.passed()
		b.passed = nil
	}
	return n, err
}

func (b *countingBody) Close() error { return b.r.Close() }

// watchStdin is an http.RoundTripper that closes passed once a StreamInput
// request body has been read past mark bytes.
type watchStdin struct {
	rt     http.RoundTripper
	mark   int64
	once   sync.Once
	passed chan struct{}
}

func (w *watchStdin) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/StreamInput") && req.Body != nil {
		req = req.Clone(req.Context())
		req.Body = &countingBody{r: req.Body, mark: w.mark, passed: func() { w.once.Do(func() { close(w.passed) }) }}
	}
	return w.rt.RoundTrip(req)
}

// TestWriteUnblockedByCloseWrite: a Write stuck because the worker stopped
// reading its stdin (envd stops reading the input stream, the connection
// fills up) returns, with an error, as soon as CloseWrite is called; so
// does one stuck when Close is called. CloseWrite then closes the
// worker's stdin without waiting CloseTimeout for the stuck stream.
func TestWriteUnblockedByCloseWrite(t *testing.T) {
	for _, how := range []string{"CloseWrite", "Close"} {
		t.Run(how, func(t *testing.T) {
			srv := newServer(t, fakeOptions())
			tr := newE2B(t, srv, "term-ok") // never reads stdin, ends on SIGTERM
			tr.CloseTimeout, tr.TermTimeout = 200*time.Millisecond, 200*time.Millisecond
			w := &watchStdin{rt: http.DefaultTransport.(*http.Transport).Clone(), mark: 2 << 20, passed: make(chan struct{})}
			tr.HTTPClient = &http.Client{Transport: w}
			p, err := tr.Start(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			// Far more than the pipe, envd's chunk and the sockets hold:
			// this Write cannot finish while the worker does not read.
			big := make([]byte, 64<<20)
			written := make(chan error, 1)
			var returned time.Time
			go func() {
				_, err := p.Write(big)
				returned = time.Now()
				written <- err
			}()
			select {
			case <-w.passed: // the Write is under way, and stuck for good
			case err := <-written:
				t.Fatalf("a 64 MiB Write to a worker that does not read returned: %v", err)
			case <-time.After(hangGuard):
				t.Fatal("the input stream never carried the Write")
			}
			called := time.Now()
			closed := make(chan error, 1)
			go func() {
				if how == "Close" {
					closed <- p.Close()
				} else {
					closed <- p.CloseWrite()
				}
			}()
			select {
			case err := <-written:
				t.Logf("Write returned %v after %s was called: %v", returned.Sub(called), how, err)
				if err == nil {
					t.Error("the interrupted Write reported no error")
				}
			case <-time.After(hangGuard):
				t.Fatalf("Write still blocked %v after %s", hangGuard, how)
			}
			select {
			case err := <-closed:
				// Not waiting for an input stream the worker holds, and
				// envd's CloseStdin ends its blocked write: no error.
				t.Logf("%s returned after %v: %v", how, time.Since(called), err)
				if err != nil {
					t.Errorf("%s: %v", how, err)
				}
			case <-time.After(hangGuard):
				t.Fatalf("%s had not returned after %v", how, hangGuard)
			}
			if srv.Calls(e2bfake.OpCloseStdin) == 0 {
				t.Error("CloseStdin was never called")
			}
		})
	}
}

// TestNewPoolBoundedByCallerDeadline: a NewPool whose context ends while
// a sandbox is being created, or while the worker is being uploaded into
// one, against a control plane that answers neither the creation nor the
// kill, returns within CleanupGrace of the context's end, and the
// sandboxes are killed once the control plane answers again.
func TestNewPoolBoundedByCallerDeadline(t *testing.T) {
	for _, op := range []e2bfake.Op{e2bfake.OpCreate, e2bfake.OpUpload} {
		t.Run(string(op), func(t *testing.T) {
			srv := newServer(t, fakeOptions())
			stall := srv.Stall(op)
			kill := srv.Stall(e2bfake.OpKill)
			tr := newE2B(t, srv, "worker")
			tr.CleanupGrace = testGrace
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			ended := endOf(ctx)
			type result struct {
				p   *e2b.Pool
				err error
				at  time.Time
			}
			res := make(chan result, 1)
			go func() {
				p, err := e2b.NewPool(ctx, tr, 2)
				res <- result{p, err, time.Now()}
			}()
			waitClosed(t, "the stalled "+string(op), stall.Arrived())
			cancel()
			var r result
			select {
			case r = <-res:
			case <-time.After(hangGuard):
				t.Fatalf("NewPool had not returned %v after its context ended", hangGuard)
			}
			if r.err == nil {
				r.p.Close()
				t.Fatal("NewPool succeeded")
			}
			t.Logf("NewPool returned %v after its context ended: %v", r.at.Sub(ended()), r.err)
			if !errors.Is(r.err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", r.err)
			}
			stall.Release()
			kill.Release()
		})
	}
}
