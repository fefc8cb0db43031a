package worker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/worker"
)

// stopHost is a host end of bare pipes to a worker's Serve, whose output
// is pumped into lines so that the worker never blocks on it.
type stopHost struct {
	hr    *io.PipeReader // the worker's output
	hw    *io.PipeWriter // the worker's input
	lines chan string
	done  chan error // Serve's return
}

func serveStop(t *testing.T, ctx context.Context, w *worker.Worker) *stopHost {
	t.Helper()
	hr, ww := io.Pipe()
	wr, hw := io.Pipe()
	h := &stopHost{hr: hr, hw: hw, lines: make(chan string, 1024), done: make(chan error, 1)}
	go func() {
		h.done <- w.Serve(ctx, wiretest.Conn(t, pipeEnd{wr, ww}, wiretest.WorkerFrames))
	}()
	go func() {
		defer close(h.lines)
		r := bufio.NewReader(hr)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			h.lines <- line
		}
	}()
	t.Cleanup(func() {
		hw.Close()
		hr.Close()
		for range h.lines {
		}
	})
	return h
}

func (h *stopHost) send(line string) { io.WriteString(h.hw, line+"\n") }

// until reads lines until one contains s, and returns it.
func (h *stopHost) until(t *testing.T, s string) string {
	t.Helper()
	for line := range h.lines {
		if strings.Contains(line, s) {
			return line
		}
	}
	t.Fatalf("the worker's output ended before %q", s)
	return ""
}

// served waits for Serve to return, with a hang guard.
func (h *stopHost) served(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10 s")
		return nil
	}
}

// prepare prepares session s and returns the session directory.
func (h *stopHost) prepare(t *testing.T) string {
	t.Helper()
	h.send(`{"jsonrpc":"2.0","id":1,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[]}}}`)
	var resp struct {
		Result tproxy.PrepareResult `json:"result"`
	}
	json.Unmarshal([]byte(h.until(t, `"id":1`)), &resp)
	if resp.Result.SessionDir == "" {
		t.Fatal("prepare did not answer with a session directory")
	}
	return resp.Result.SessionDir
}

// blockingWorker has a driver "wait" that sends "blocked" and waits for
// its context, and one, "stuck", that ignores it until release closes.
func blockingWorker(t *testing.T, release chan struct{}) *worker.Worker {
	w := worker.New("t", "1")
	w.WorkDir = t.TempDir()
	w.HeartbeatInterval = 10 * time.Millisecond
	w.RegisterFunc("wait", func(ctx context.Context, s *worker.Step) error {
		s.Event("blocked", nil)
		<-ctx.Done()
		return ctx.Err()
	})
	w.RegisterFunc("stuck", func(ctx context.Context, s *worker.Step) error {
		s.Event("blocked", nil)
		<-release
		return nil
	})
	return w
}

func gone(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the session directory %s is left behind (%v)", dir, err)
	}
}

// TestServeStopsWhenCtxEndsMidStep: the end of Serve's ctx (SIGTERM, in a
// worker process) cancels the step in flight, whose step_failed and -32800
// answer are still written before Serve returns nil; the session
// directory is removed.
func TestServeStopsWhenCtxEndsMidStep(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	h := serveStop(t, ctx, blockingWorker(t, nil))
	dir := h.prepare(t)
	h.send(`{"jsonrpc":"2.0","id":2,"method":"exec_step","params":{"step_id":"a","driver":"wait"}}`)
	h.until(t, `"blocked"`)
	cancel(errors.New("told to stop"))
	failed := h.until(t, `"step_failed"`)
	if !strings.Contains(failed, `"error_type":"cancelled"`) {
		t.Errorf("step_failed %s, want error_type cancelled", failed)
	}
	answer := h.until(t, `"id":2`)
	if !strings.Contains(answer, `"code":-32800`) || !strings.Contains(answer, "told to stop") {
		t.Errorf("answer %s, want -32800 naming the cause", answer)
	}
	if err := h.served(t); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	gone(t, dir)
}

// TestServeStopsWhenWriteFails: once the host stops reading (its end of
// the worker's output is closed: EPIPE in a worker process), the next
// write fails, the step is cancelled, and Serve returns the write error
// with the session directory removed.
func TestServeStopsWhenWriteFails(t *testing.T) {
	cancelled := make(chan struct{})
	w := blockingWorker(t, nil)
	w.RegisterFunc("notice", func(ctx context.Context, s *worker.Step) error {
		s.Event("blocked", nil)
		<-ctx.Done()
		close(cancelled)
		return ctx.Err()
	})
	h := serveStop(t, context.Background(), w)
	dir := h.prepare(t)
	h.send(`{"jsonrpc":"2.0","id":2,"method":"exec_step","params":{"step_id":"a","driver":"notice"}}`)
	h.until(t, `"blocked"`)
	h.hr.Close() // the next heartbeat fails
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second): // a hang guard
		t.Fatal("the step was not cancelled after the host stopped reading")
	}
	if err := h.served(t); !errors.Is(err, io.ErrClosedPipe) || !strings.Contains(err.Error(), "writing to host") {
		t.Errorf("Serve = %v, want the write error", err)
	}
	gone(t, dir)
}

// TestServeStopGraceBoundsAStuckDriver: a driver that ignores its
// cancelled context holds Serve no longer than Worker.StopGrace after the
// end of the input; the session directory is removed all the same.
func TestServeStopGraceBoundsAStuckDriver(t *testing.T) {
	release := make(chan struct{})
	w := blockingWorker(t, release)
	w.StopGrace = 50 * time.Millisecond
	h := serveStop(t, context.Background(), w)
	dir := h.prepare(t)
	h.send(`{"jsonrpc":"2.0","id":2,"method":"exec_step","params":{"step_id":"a","driver":"stuck"}}`)
	h.until(t, `"blocked"`)
	closed := time.Now()
	h.hw.Close()
	err := h.served(t)
	t.Logf("Serve returned %v after the end of its input, with a stuck driver and a %v grace", time.Since(closed), w.StopGrace)
	close(release) // the driver ends; its answer goes nowhere
	if err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	gone(t, dir)
	if left, _ := filepath.Glob(filepath.Join(w.WorkDir, "tproxy-*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
