package e2b_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/transport/e2b"
	"github.com/tproxy/tproxy/worker"
)

// workerEnv makes the test binary act as a worker (the fork/exec trick):
// "worker" serves testWorker; the other modes misbehave on purpose.
const workerEnv = "TPROXY_E2B_TEST_WORKER"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(workerEnv); mode {
	case "":
	case "worker":
		worker.Main(testWorker())
	case "exit3":
		fmt.Fprint(os.Stderr, "starting\nboom: something bad happened\n")
		os.Exit(3)
	case "ignore-term": // ignore stdin EOF and SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Hour)
	case "term-ok": // exit on SIGTERM, ignore stdin EOF
		fmt.Println("ready")
		time.Sleep(time.Hour)
	case "flood-exit": // 100 KiB of stdout nobody reads, then exit
		os.Stdout.Write(make([]byte, 100<<10))
		os.Exit(0)
	case "lines": // TPROXY_E2B_TEST_LINES copies of TPROXY_E2B_TEST_LINE, one write each, as a durable worker writes events
		line := []byte(os.Getenv("TPROXY_E2B_TEST_LINE") + "\n")
		n, _ := strconv.Atoi(os.Getenv("TPROXY_E2B_TEST_LINES"))
		for range n {
			if _, err := os.Stdout.Write(line); err != nil {
				os.Exit(1)
			}
		}
		os.Exit(0)
	case "killself":
		fmt.Fprint(os.Stderr, "about to be killed\n")
		if self, err := os.FindProcess(os.Getpid()); err == nil {
			self.Kill() // SIGKILL on unix
		}
		time.Sleep(time.Hour)
	default:
		fmt.Fprintf(os.Stderr, "unknown %s %q\n", workerEnv, mode)
		os.Exit(100)
	}
	goleak.VerifyTestMain(wiretest.Main(m)) // a tap reporting after its test ended fails the run
}

// testWorker is the demo worker plus drivers that misbehave on purpose.
func testWorker() *worker.Worker {
	w := demo.NewWorker()
	w.HeartbeatInterval = 50 * time.Millisecond
	// A worker with a larger cap than the host's, like a worker in another
	// language without one, so the host's cap is what refuses big frames.
	w.MaxFrameSize = 32 << 20
	// block says so on stderr and in an event, then waits for its context.
	w.RegisterFunc("block", func(ctx context.Context, s *worker.Step) error {
		fmt.Fprintln(os.Stderr, "block: waiting for cancellation")
		s.Event("blocked", nil)
		<-ctx.Done()
		return ctx.Err()
	})
	// sleep sleeps config.ms milliseconds.
	w.RegisterFunc("sleep", func(ctx context.Context, s *worker.Step) error {
		ms, _ := s.Config()["ms"].(float64)
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	// events emits config.n "tick" events, as bench.EventLineSize sizes
	// them.
	w.RegisterFunc("events", func(ctx context.Context, s *worker.Step) error {
		n, _ := s.Config()["n"].(float64)
		for i := range int(n) {
			if err := s.Event("tick", map[string]any{"i": 100000 + i}); err != nil {
				return err
			}
		}
		return nil
	})
	// noop does nothing: its cost is the protocol's.
	w.RegisterFunc("noop", func(ctx context.Context, s *worker.Step) error { return nil })
	// big emits one event carrying config.bytes bytes.
	w.RegisterFunc("big", func(ctx context.Context, s *worker.Step) error {
		n, _ := s.Config()["bytes"].(float64)
		return s.Event("big", map[string]any{"blob": strings.Repeat("x", int(n))})
	})
	return w
}

// childEnv is the environment of a test worker in mode. GORACE keeps a
// race-enabled child from sleeping a second at exit.
func childEnv(mode string) map[string]string {
	return map[string]string{
		workerEnv: mode,
		"GORACE":  strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0"),
	}
}

func exe(t testing.TB) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newServer starts a local E2B that is closed when the test ends.
func newServer(t testing.TB, opts e2bfake.Options) *e2bfake.Server {
	t.Helper()
	if opts.KeepaliveInterval == 0 {
		opts.KeepaliveInterval = 20 * time.Millisecond // keepalives interleave with data
	}
	srv, err := e2bfake.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// newE2B returns a transport pointed at srv that runs the test binary in
// mode.
func newE2B(t testing.TB, srv *e2bfake.Server, mode string) *e2b.E2B {
	return &e2b.E2B{
		APIKey:       srv.APIKey(),
		APIURL:       srv.URL,
		EnvdURL:      srv.URL,
		Binary:       exe(t),
		Env:          childEnv(mode),
		RetryBackoff: time.Millisecond,
		Metadata:     map[string]string{"test": t.Name()},
	}
}

// tapped validates every frame of the host and the Go worker (mode
// "worker") of tr's sessions, both ways, against docs/schema.
func tapped(t testing.TB, tr transport.Transport) transport.Transport {
	return wiretest.Transport(t, tr, wiretest.Both)
}

// unwrap returns the Process a tap wraps, for e2b.InfoOf, which knows
// only its own.
func unwrap(p transport.Process) transport.Process {
	if u, ok := p.(interface{ Unwrap() transport.Process }); ok {
		return u.Unwrap()
	}
	return p
}

// subprocess runs the test binary in mode as a local child.
func subprocess(t testing.TB, mode string) *transport.Subprocess {
	env := os.Environ()
	for k, v := range childEnv(mode) {
		env = append(env, k+"="+v)
	}
	return &transport.Subprocess{Path: exe(t), Env: env}
}

// syncBuffer is a concurrency-safe bytes buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitDone fails the test if p is not Done within a generous bound; it
// guards against hangs and measures nothing.
func waitDone(t testing.TB, p transport.Process) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("process not Done after 30s")
	}
}

// fakeOptions are the server options most tests use.
func fakeOptions() e2bfake.Options { return e2bfake.Options{} }

// subprocessProcess starts a local worker that exits at once, for tests
// that need a Process of another transport.
func subprocessProcess(t testing.TB) transport.Process {
	t.Helper()
	p, err := subprocess(t, "exit3").Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
