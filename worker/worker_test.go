package worker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/worker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type pipeEnd struct {
	io.Reader
	io.WriteCloser
}

// rawHost connects to a worker's Serve with bare pipes, so tests see the
// exact bytes on the wire.
type rawHost struct {
	w     io.WriteCloser
	lines chan string // what the worker wrote, pumped so it never blocks
	done  chan error
}

func serveRaw(t *testing.T, w *worker.Worker) *rawHost {
	t.Helper()
	hr, ww := io.Pipe()
	wr, hw := io.Pipe()
	h := &rawHost{w: hw, lines: make(chan string, 1024), done: make(chan error, 1)}
	// The test writes the host's frames by hand, some wrong on purpose;
	// the worker's are validated against docs/schema.
	go func() {
		h.done <- w.Serve(context.Background(), wiretest.Conn(t, pipeEnd{wr, ww}, wiretest.WorkerFrames))
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
		for range h.lines {
		}
		if err := <-h.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return h
}

func (h *rawHost) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(h.w, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// recv reads lines until the response with the given id.
func (h *rawHost) recv(t *testing.T, id int) (notifs []map[string]any, resp map[string]any) {
	t.Helper()
	for {
		line, ok := <-h.lines
		if !ok {
			t.Fatal("the worker closed its stdout")
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("worker wrote a non-JSON line %q", line)
		}
		if m["jsonrpc"] != "2.0" {
			t.Fatalf("line without jsonrpc 2.0: %q", line)
		}
		if _, isResp := m["id"]; isResp && m["method"] == nil {
			if m["id"] != float64(id) {
				t.Fatalf("response for id %v, want %d", m["id"], id)
			}
			return notifs, m
		}
		notifs = append(notifs, m)
	}
}

func sleeper() *worker.Worker {
	w := worker.New("t", "1")
	w.RegisterFunc("sleep", func(ctx context.Context, s *worker.Step) error {
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		s.SetOutput("n", 7)
		return s.Event("slept", nil)
	})
	return w
}

// TestServeFinishesCallsAfterStdinEOF: the host may close the worker's
// stdin right after sending; the calls already sent are still answered,
// then Serve returns nil.
func TestServeFinishesCallsAfterStdinEOF(t *testing.T) {
	w := sleeper()
	hr, ww := io.Pipe()
	wr, hw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- w.Serve(context.Background(), wiretest.Conn(t, pipeEnd{wr, ww}, wiretest.WorkerFrames))
	}()
	go func() {
		io.WriteString(hw, `{"jsonrpc":"2.0","id":1,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[]}}}`+"\n")
		io.WriteString(hw, `{"jsonrpc":"2.0","id":2,"method":"exec_step","params":{"step_id":"a","driver":"sleep"}}`+"\n")
		hw.Close()
	}()
	out, err := io.ReadAll(hr)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil after EOF", err)
	}
	if !strings.Contains(string(out), `"id":2,"result":{"status":"complete","step_id":"a"`) &&
		!strings.Contains(string(out), `"result":{"status":"complete","step_id":"a"`) {
		t.Fatalf("exec_step was not answered before Serve returned:\n%s", out)
	}
	if !strings.Contains(string(out), `"name":"slept"`) {
		t.Errorf("the step's event is missing:\n%s", out)
	}
}

// TestWireShape pins the wire format of a session: JSON-RPC 2.0 lines, the
// step's notifications before its response, output summaries only.
func TestWireShape(t *testing.T) {
	h := serveRaw(t, sleeper())
	h.send(t, `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"data":"x"}}`)
	_, resp := h.recv(t, 1)
	res := resp["result"].(map[string]any)
	if res["status"] != "pong" || res["echo"] != "x" || res["protocol"] != float64(tproxy.ProtocolVersion) {
		t.Errorf("ping result %v", res)
	}
	h.send(t, `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"sleep"}]}}}`)
	notifs, resp := h.recv(t, 2)
	if len(notifs) != 2 || notifs[0]["method"] != "event" || notifs[1]["method"] != "metric" {
		t.Errorf("prepare notifications: %v", notifs)
	}
	if r := resp["result"].(map[string]any); r["status"] != "ready" || r["session_dir"] == "" {
		t.Errorf("prepare result %v", r)
	}
	h.send(t, `{"jsonrpc":"2.0","id":3,"method":"exec_step","params":{"step_id":"a","driver":"sleep"}}`)
	notifs, resp = h.recv(t, 3)
	var names []string
	for _, n := range notifs {
		p := n["params"].(map[string]any)
		if n["method"] != "heartbeat" {
			names = append(names, n["method"].(string)+":"+p["name"].(string))
		}
	}
	want := "event:step_start event:slept metric:step_duration_ms event:step_complete"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("exec_step notifications:\n got %s\nwant %s", got, want)
	}
	r := resp["result"].(map[string]any)
	outs := r["outputs"].(map[string]any)
	if sum := outs["n"].(map[string]any); sum["type"] != "int" || sum["value"] != float64(7) {
		t.Errorf("output summary %v", sum)
	}
}

// TestCancelRequestCancelsQueuedAndRunning: $/cancelRequest ends a running
// step with -32800, and the worker goes on.
func TestCancelRequest(t *testing.T) {
	w := worker.New("t", "1")
	started := make(chan struct{})
	w.RegisterFunc("wait", func(ctx context.Context, s *worker.Step) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	})
	h := serveRaw(t, w)
	h.send(t, `{"jsonrpc":"2.0","id":1,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[]}}}`)
	h.recv(t, 1)
	h.send(t, `{"jsonrpc":"2.0","id":2,"method":"exec_step","params":{"step_id":"a","driver":"wait"}}`)
	<-started
	h.send(t, `{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":2}}`)
	_, resp := h.recv(t, 2)
	e, _ := resp["error"].(map[string]any)
	if e == nil || e["code"] != float64(tproxy.CodeRequestCancelled) {
		t.Fatalf("response %v, want error code %d", resp, tproxy.CodeRequestCancelled)
	}
	h.send(t, `{"jsonrpc":"2.0","id":3,"method":"ping"}`)
	h.recv(t, 3)
}

func TestRegisterRefusesDuplicatesAndProtocolMethods(t *testing.T) {
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", name)
			}
		}()
		f()
	}
	w := worker.New("t", "1")
	w.RegisterFunc("a", func(context.Context, *worker.Step) error { return nil })
	mustPanic("duplicate driver", func() { w.RegisterFunc("a", func(context.Context, *worker.Step) error { return nil }) })
	mustPanic("empty driver name", func() { w.RegisterFunc("", func(context.Context, *worker.Step) error { return nil }) })
	mustPanic("protocol method", func() { w.Handle(tproxy.MethodExecStep, nil) })
	w.Handle("custom", func(context.Context, json.RawMessage) (any, error) { return nil, errors.New("x") })
	mustPanic("duplicate method", func() { w.Handle("custom", nil) })
}
