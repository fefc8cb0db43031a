package host_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// workerEnv makes the test binary act as the worker (the fork/exec trick:
// no separate build step).
const workerEnv = "TPROXY_HOST_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		worker.Main(testWorker())
	}
	goleak.VerifyTestMain(m)
}

// testWorker is the demo worker plus drivers that misbehave on purpose.
func testWorker() *worker.Worker {
	w := demo.NewWorker()
	w.HeartbeatInterval = 20 * time.Millisecond
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
	w.RegisterFunc("big", func(ctx context.Context, s *worker.Step) error {
		n, _ := s.Config()["bytes"].(float64)
		return s.Event("big", map[string]any{"blob": strings.Repeat("x", int(n))})
	})
	return w
}

// subprocess runs testWorker in a child process; stderr goes to w.
func subprocess(stderr *syncBuffer) *transport.Subprocess {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	t := &transport.Subprocess{Path: exe, Env: append(os.Environ(), workerEnv+"=1")}
	if stderr != nil {
		t.Stderr = stderr
	}
	return t
}

// inMemory runs testWorker in this process.
func inMemory() *transport.InMemory {
	return &transport.InMemory{Serve: testWorker().Serve}
}
