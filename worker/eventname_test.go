package worker_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/worker"
)

// TestEventRefusesHostNames: a driver cannot send an event under a name
// the host writes itself, or no name (docs/protocol.md section 6.1):
// Step.Event returns an error and nothing goes on the wire, while an
// ordinary event does.
func TestEventRefusesHostNames(t *testing.T) {
	names := []string{tproxy.EventRunComplete, tproxy.EventStepTimeout, tproxy.EventProtocolWarning, "", "mine"}
	errs := map[string]error{}
	w := worker.New("t", "1")
	w.WorkDir = t.TempDir()
	w.RegisterFunc("emit", func(ctx context.Context, s *worker.Step) error {
		for _, n := range names {
			errs[n] = s.Event(n, map[string]any{"x": 1})
		}
		return nil
	})
	h := serveRaw(t, w)
	h.send(t, `{"jsonrpc":"2.0","id":1,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"emit"}]}}}`)
	h.recv(t, 1)
	h.send(t, `{"jsonrpc":"2.0","id":2,"method":"exec_step","params":{"step_id":"a","driver":"emit"}}`)
	notifs, resp := h.recv(t, 2)
	if resp["result"] == nil {
		t.Fatalf("exec_step: %v", resp)
	}
	var sent []string
	for _, n := range notifs {
		if n["method"] != tproxy.MethodEvent {
			continue
		}
		name := n["params"].(map[string]any)["name"].(string)
		if name != tproxy.EventStepStart && name != tproxy.EventStepComplete {
			sent = append(sent, name)
		}
	}
	if strings.Join(sent, ",") != "mine" {
		t.Errorf("events sent: %q, want only \"mine\"", sent)
	}
	for _, n := range names {
		if (errs[n] == nil) != (n == "mine") {
			t.Errorf("Event(%q) = %v", n, errs[n])
		}
	}
}
