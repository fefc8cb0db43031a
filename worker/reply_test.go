package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/worker"
)

// writeRecorder is a worker's connection that records each Write the
// worker makes, reading requests from a pipe.
type writeRecorder struct {
	r      *io.PipeReader
	mu     sync.Mutex
	writes []string
	got    chan struct{} // signalled on each write
}

func (w *writeRecorder) Read(b []byte) (int, error) { return w.r.Read(b) }
func (w *writeRecorder) Close() error               { return w.r.Close() }
func (w *writeRecorder) Write(b []byte) (int, error) {
	w.mu.Lock()
	w.writes = append(w.writes, string(b))
	w.mu.Unlock()
	select {
	case w.got <- struct{}{}:
	default:
	}
	return len(b), nil
}

// waitFor waits until a write holds the response with id and returns every
// write so far.
func (w *writeRecorder) waitFor(t *testing.T, id int) []string {
	t.Helper()
	want := `"id":` + itoa(id) + `,`
	for {
		w.mu.Lock()
		ws := append([]string(nil), w.writes...)
		w.mu.Unlock()
		for _, s := range ws {
			if strings.Contains(s, want) {
				return ws
			}
		}
		select {
		case <-w.got:
		case <-t.Context().Done():
			t.Fatalf("no response %d", id)
		}
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func serveRecorded(t *testing.T, w *worker.Worker) (*writeRecorder, io.Writer) {
	t.Helper()
	pr, pw := io.Pipe()
	rec := &writeRecorder{r: pr, got: make(chan struct{}, 1)}
	done := make(chan error, 1)
	go func() { done <- w.Serve(context.Background(), wiretest.Conn(t, rec, wiretest.WorkerFrames)) }()
	t.Cleanup(func() {
		pw.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return rec, pw
}

// TestStepEndGoesOutWithResponse: what the runtime sends after a step's
// driver returned (its metric and step_complete) is written in the same
// Write as the response, so the host wakes once for the three; the
// driver's own event is written when emitted, before it.
func TestStepEndGoesOutWithResponse(t *testing.T) {
	w := worker.New("t", "1")
	w.RegisterFunc("one", func(ctx context.Context, s *worker.Step) error { return s.Event("mine", nil) })
	rec, in := serveRecorded(t, w)
	io.WriteString(in, `{"jsonrpc":"2.0","id":1,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[]}}}`+"\n")
	rec.waitFor(t, 1)
	io.WriteString(in, `{"jsonrpc":"2.0","id":2,"method":"exec_step","params":{"step_id":"a","driver":"one"}}`+"\n")
	ws := rec.waitFor(t, 2)
	last := ws[len(ws)-1]
	lines := strings.Split(strings.TrimSuffix(last, "\n"), "\n")
	var names []string
	for _, l := range lines {
		var m struct {
			Method string `json:"method"`
			ID     *int   `json:"id"`
			Params struct {
				Name string `json:"name"`
			} `json:"params"`
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		switch {
		case m.ID != nil:
			names = append(names, "response")
		default:
			names = append(names, m.Method+":"+m.Params.Name)
		}
	}
	if got, want := strings.Join(names, " "), "metric:step_duration_ms event:step_complete response"; got != want {
		t.Errorf("last write holds %q, want %q", got, want)
	}
	var mine int
	for _, s := range ws[:len(ws)-1] {
		if strings.Contains(s, `"name":"mine"`) {
			mine++
			if strings.Contains(s, "step_complete") {
				t.Errorf("the driver's event waited for the end of the step: %q", s)
			}
		}
	}
	if mine != 1 {
		t.Errorf("driver's event written %d times before the response, want 1", mine)
	}
}

// TestUnsendableResults: a result that cannot be encoded, or is over the
// frame cap, is answered with an internal error naming why, rather than
// leaving the host waiting.
func TestUnsendableResults(t *testing.T) {
	w := worker.New("t", "1")
	w.MaxFrameSize = 1024
	w.Handle("func", func(context.Context, json.RawMessage) (any, error) { return map[string]any{"f": func() {}}, nil })
	w.Handle("big", func(context.Context, json.RawMessage) (any, error) { return strings.Repeat("x", 2000), nil })
	h := serveRaw(t, w)
	for i, tc := range []struct{ method, want string }{
		{"func", "encoding the result: json: unsupported type: func()"},
		{"big", "over the frame cap of 1024"},
	} {
		_, resp := call(t, h, i+1, tc.method, nil)
		e, _ := resp["error"].(map[string]any)
		if e == nil || e["code"] != float64(tproxy.CodeInternalError) || !strings.Contains(e["message"].(string), tc.want) {
			t.Errorf("%s: response %v, want an internal error containing %q", tc.method, resp, tc.want)
		}
	}
	if _, resp := call(t, h, 3, "ping", nil); resp["result"] == nil {
		t.Errorf("ping after: %v", resp)
	}
}

// TestHandlerErrors: a Handler's *worker.Error is sent with its code,
// message and data; any other error as an internal error.
func TestHandlerErrors(t *testing.T) {
	w := worker.New("t", "1")
	w.Handle("typed", func(context.Context, json.RawMessage) (any, error) {
		return nil, fmt.Errorf("wrapped: %w", &worker.Error{Code: -32050, Message: "no such table", Data: map[string]any{"table": "t1"}})
	})
	w.Handle("plain", func(context.Context, json.RawMessage) (any, error) { return nil, errors.New("disk on fire") })
	h := serveRaw(t, w)
	_, resp := call(t, h, 1, "typed", nil)
	want := map[string]any{"code": float64(-32050), "message": "no such table", "data": map[string]any{"table": "t1"}}
	if d := cmp.Diff(want, resp["error"]); d != "" {
		t.Errorf("typed error (-want +got):\n%s", d)
	}
	_, resp = call(t, h, 2, "plain", nil)
	want = map[string]any{"code": float64(tproxy.CodeInternalError), "message": "disk on fire"}
	if d := cmp.Diff(want, resp["error"]); d != "" {
		t.Errorf("plain error (-want +got):\n%s", d)
	}
}

// TestAsyncNotify: with AsyncNotify, a driver's events still all arrive,
// in emission order, between step_start and step_complete and before the
// response.
func TestAsyncNotify(t *testing.T) {
	w := worker.New("t", "1")
	w.AsyncNotify = true
	const n = 5000
	w.RegisterFunc("many", func(ctx context.Context, s *worker.Step) error {
		for i := range n {
			if err := s.Event("tick", map[string]any{"i": i}); err != nil {
				return err
			}
		}
		s.Logger().Info("done")
		return nil
	})
	h := serveRaw(t, w)
	call(t, h, 1, "prepare", map[string]any{"session_id": "s", "manifest": map[string]any{"steps": []any{}}})
	notifs, resp := call(t, h, 2, "exec_step", map[string]any{"step_id": "a", "driver": "many"})
	if resp["result"] == nil {
		t.Fatalf("response %v", resp)
	}
	var got []string
	next := 0
	for _, m := range notifs {
		p, _ := m["params"].(map[string]any)
		switch {
		case m["method"] == "heartbeat":
		case p["name"] == "tick":
			if i := p["data"].(map[string]any)["i"]; i != float64(next) {
				t.Fatalf("tick %v arrived where %d was due", i, next)
			}
			next++
		case m["method"] == "log":
			got = append(got, "log:"+p["message"].(string))
		default:
			got = append(got, m["method"].(string)+":"+p["name"].(string))
		}
	}
	if next != n {
		t.Errorf("%d ticks arrived, want %d", next, n)
	}
	if g, want := strings.Join(got, " "), "event:step_start log:done metric:step_duration_ms event:step_complete"; g != want {
		t.Errorf("runtime notifications %q, want %q", g, want)
	}
}
