package worker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/worker"
)

func TestMain(m *testing.M) {
	if playRole != nil {
		playRole() // exits if the binary was started in a role (exit_test.go)
	}
	goleak.VerifyTestMain(wiretest.Main(m)) // a tap reporting after its test ended fails the run
}

// playRole, if set, plays the role the test binary was started in, if any.
var playRole func()

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

// TestServeCancelsCallsAtStdinEOF: the end of the host's input stops the
// session (docs/protocol.md section 8, "End of input"): the step running
// is cancelled and still reports (step_failed, error_type cancelled,
// before its -32800 answer), a request queued behind it is answered -32800
// without running, then Serve returns nil and the session directory is
// gone.
func TestServeCancelsCallsAtStdinEOF(t *testing.T) {
	w := worker.New("t", "1")
	w.WorkDir = t.TempDir()
	started := make(chan struct{})
	w.RegisterFunc("wait", func(ctx context.Context, s *worker.Step) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	})
	w.RegisterFunc("never", func(ctx context.Context, s *worker.Step) error {
		t.Error("a request queued when the input ended was run")
		return nil
	})
	hr, ww := io.Pipe()
	wr, hw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- w.Serve(context.Background(), wiretest.Conn(t, pipeEnd{wr, ww}, wiretest.WorkerFrames))
	}()
	out := bufio.NewReader(hr)
	io.WriteString(hw, `{"jsonrpc":"2.0","id":1,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[]}}}`+"\n")
	var prepared struct {
		Result tproxy.PrepareResult `json:"result"`
	}
	for prepared.Result.SessionDir == "" {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		json.Unmarshal([]byte(line), &prepared)
	}
	restc := make(chan []byte, 1)
	go func() { // the pipe is synchronous: keep reading
		rest, _ := io.ReadAll(out)
		restc <- rest
	}()
	io.WriteString(hw, `{"jsonrpc":"2.0","id":2,"method":"exec_step","params":{"step_id":"a","driver":"wait"}}`+"\n")
	io.WriteString(hw, `{"jsonrpc":"2.0","id":3,"method":"exec_step","params":{"step_id":"b","driver":"never"}}`+"\n")
	<-started
	hw.Close()
	rest := <-restc
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil after EOF", err)
	}
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(string(rest)), "\n") {
		var m struct {
			ID     *int   `json:"id"`
			Method string `json:"method"`
			Params struct {
				Name string         `json:"name"`
				Data map[string]any `json:"data"`
			} `json:"params"`
			Error *struct {
				Code int64 `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		switch {
		case m.ID != nil && m.Error != nil:
			order = append(order, fmt.Sprintf("answer %d: %d", *m.ID, m.Error.Code))
		case m.ID != nil:
			order = append(order, fmt.Sprintf("answer %d: result", *m.ID))
		case m.Params.Name == "step_failed":
			order = append(order, fmt.Sprintf("step_failed %v", m.Params.Data["error_type"]))
		}
	}
	want := []string{"step_failed cancelled", "answer 2: -32800", "answer 3: -32800"}
	if !slices.Equal(order, want) {
		t.Errorf("after the end of the input the worker wrote %q, want %q", order, want)
	}
	if _, err := os.Stat(prepared.Result.SessionDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the session directory is left behind: %v", err)
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
