package host_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// workerEnv makes the test binary act as the worker (the fork/exec trick:
// no separate build step).
const workerEnv = "TPROXY_HOST_TEST_WORKER"

// realBeatEnv gives the test worker the default heartbeat interval instead
// of the 20 ms the watchdog tests need.
const realBeatEnv = "TPROXY_HOST_TEST_DEFAULT_HEARTBEAT"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		worker.Main(testWorker())
	}
	// wiretest.Main fails the run if a frame the host or the test worker
	// wrote did not validate against docs/schema (see inMemory and
	// subprocess).
	goleak.VerifyTestMain(ownTMPDIR{wiretest.Main(m)})
}

// ownTMPDIR runs the tests with TMPDIR set to a directory of their own,
// removed afterwards. The test workers inherit it and make their session
// directories there: the fault-matrix workers die in ways (SIGKILL,
// os.Exit, a crash) in which no worker can remove its own.
type ownTMPDIR struct{ m interface{ Run() int } }

func (o ownTMPDIR) Run() int {
	dir, err := os.MkdirTemp("", "host-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Setenv("TMPDIR", dir)
	return o.m.Run()
}

// testWorker is the demo worker plus drivers that misbehave on purpose.
func testWorker() *worker.Worker {
	w := demo.NewWorker()
	w.HeartbeatInterval = 20 * time.Millisecond
	if os.Getenv(realBeatEnv) != "" { // a production-like worker, for the fan-out tests
		w.HeartbeatInterval = worker.DefaultHeartbeatInterval
	}
	// emit sends config.events "tick" events numbered from 0.
	w.RegisterFunc("emit", func(ctx context.Context, s *worker.Step) error {
		n, _ := s.Config()["events"].(float64)
		for i := range int(n) {
			if err := s.Event("tick", map[string]any{"i": i}); err != nil {
				return err
			}
		}
		return nil
	})
	// noisy writes to stdout every way a driver might.
	w.RegisterFunc("noisy", func(ctx context.Context, s *worker.Step) error {
		fmt.Println("fmt.Println from a driver")
		os.Stdout.WriteString("os.Stdout.Write from a driver\n")
		fmt.Fprintln(os.Stderr, "stderr from a driver")
		return s.Event("noisy_done", nil)
	})
	// block emits three events, says so on stderr, then waits for its
	// context to end.
	w.RegisterFunc("block", func(ctx context.Context, s *worker.Step) error {
		for i := range 3 {
			s.Event("before_block", map[string]any{"i": i})
		}
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
	w.RegisterFunc("panic", func(ctx context.Context, s *worker.Step) error {
		s.Event("about_to_panic", nil)
		panic("driver bug")
	})
	w.RegisterFunc("fail", func(ctx context.Context, s *worker.Step) error {
		return errors.New("source table missing")
	})
	// flaky fails as transient (or config.type) until its config.passes_on
	// attempt in this worker.
	w.RegisterFunc("flaky", func(ctx context.Context, s *worker.Step) error {
		attempt := flakyAttempts.Add(1)
		passOn, _ := s.Config()["passes_on"].(float64)
		if attempt >= int64(passOn) {
			return nil
		}
		typ, _ := s.Config()["type"].(string)
		return worker.Fail(cmp.Or(typ, tproxy.ErrorTypeTransient), fmt.Errorf("attempt %d: connection refused", attempt))
	})
	// stubborn ignores its cancellation for config.ms milliseconds.
	w.RegisterFunc("stubborn", func(ctx context.Context, s *worker.Step) error {
		ms, _ := s.Config()["ms"].(float64)
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return ctx.Err()
	})
	// partial writes an artifact, then waits for its cancellation.
	w.RegisterFunc("partial", func(ctx context.Context, s *worker.Step) error {
		if err := os.WriteFile(filepath.Join(s.ArtifactDir(), "partial.csv"), []byte("id\n1\n"), 0o644); err != nil {
			return err
		}
		s.Event("blocked", nil)
		<-ctx.Done()
		return ctx.Err()
	})
	// exit emits an event, says goodbye on stderr and exits with
	// config.code in the middle of the step.
	w.RegisterFunc("exit", func(ctx context.Context, s *worker.Step) error {
		s.Event("about_to_exit", nil)
		fmt.Fprintln(os.Stderr, "exit: leaving mid-step")
		code, _ := s.Config()["code"].(float64)
		os.Exit(int(code))
		return nil
	})
	// selfkill emits an event, writes to stderr and SIGKILLs its process.
	w.RegisterFunc("selfkill", func(ctx context.Context, s *worker.Step) error {
		s.Event("about_to_die", nil)
		fmt.Fprintln(os.Stderr, "selfkill: goodbye")
		killPID(os.Getpid())
		select {}
	})
	// crash panics on a goroutine of its own: no recover can catch that,
	// the whole worker process dies.
	w.RegisterFunc("crash", func(ctx context.Context, s *worker.Step) error {
		s.Event("about_to_crash", nil)
		go func() { panic("crash: unrecoverable driver bug") }()
		select {}
	})
	// hang stops its own process (SIGSTOP): it reads, writes and beats no
	// more, like a worker wedged in a syscall.
	w.RegisterFunc("hang", func(ctx context.Context, s *worker.Step) error {
		s.Event("about_to_hang", nil)
		for { // stop again should anything continue the process
			stopSelf()
			time.Sleep(time.Millisecond)
		}

	})
	// bigresult keeps an output whose summary is config.bytes long.
	w.RegisterFunc("bigresult", func(ctx context.Context, s *worker.Step) error {
		n, _ := s.Config()["bytes"].(float64)
		s.SetOutput("blob", bigSummary(int(n)))
		return nil
	})
	// files writes config.files (name → content) as artifacts.
	w.RegisterFunc("files", func(ctx context.Context, s *worker.Step) error {
		files, _ := s.Config()["files"].(map[string]any)
		for name, content := range files {
			p := filepath.Join(s.ArtifactDir(), filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte(fmt.Sprint(content)), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	// leak tries every way to leak the config's secrets.
	w.RegisterFunc("leak", func(ctx context.Context, s *worker.Step) error {
		all := fmt.Sprint(s.Config(), s.SessionConfig())
		s.Event("leaking", map[string]any{"all": all})
		s.Metric("leaks", 1, worker.Tag("all", all))
		s.Logger().Error("leaking through the log: " + all)
		if os.Getenv(workerEnv) != "" { // in-process, stdio is the test's own
			fmt.Println("stdout:", all)
			fmt.Fprintln(os.Stderr, "stderr:", all)
		}
		os.WriteFile(filepath.Join(s.ArtifactDir(), "report.txt"), []byte("a report with no secret in it\n"), 0o644)
		if fail, _ := s.Config()["fail"].(bool); fail {
			return fmt.Errorf("leaking through the error: %s", all)
		}
		return nil
	})
	w.RegisterFunc("big", func(ctx context.Context, s *worker.Step) error {
		n, _ := s.Config()["bytes"].(float64)
		return s.Event("big", map[string]any{"blob": strings.Repeat("x", int(n))})
	})
	return w
}

// flakyAttempts counts the flaky driver's runs in this worker.
var flakyAttempts atomic.Int64

// bigSummary is an output whose summary is n bytes of text.
type bigSummary int

func (b bigSummary) Summary() any { return strings.Repeat("s", int(b)) }

// tappedSubprocess is a Subprocess whose workers' frames, both ways, are
// validated against docs/schema on the host's side of the pipe (the child
// is the Go worker). Its fields configure the Subprocess as usual.
type tappedSubprocess struct {
	*transport.Subprocess
	tapped transport.Transport
}

func (s tappedSubprocess) Start(ctx context.Context) (transport.Process, error) {
	return s.tapped.Start(ctx)
}

// subprocess runs testWorker in a child process; stderr goes to w. Its
// frames, both ways, are validated against docs/schema (tappedSubprocess).
func subprocess(stderr *syncBuffer) tappedSubprocess {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	// Under -race a program sleeps a second when it exits with code 0
	// (atexit_sleep_ms), which would only slow the tests down.
	t := &transport.Subprocess{Path: exe, Env: append(os.Environ(), workerEnv+"=1",
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))}
	if stderr != nil {
		t.Stderr = stderr
	}
	return tappedSubprocess{t, wiretest.Transport(nil, t, wiretest.Both)}
}

// inMemory runs testWorker in this process. Its frames, both ways, are
// validated against docs/schema.
func inMemory() *transport.InMemory {
	return &transport.InMemory{Serve: wiretest.Serve(nil, testWorker().Serve, wiretest.Both)}
}
