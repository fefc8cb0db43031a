package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

type extractConfig struct {
	Table    string `json:"table"`
	Password string `json:"password"`
	Limit    int    `json:"limit"`
}

// Validate refuses a negative limit, quoting the password to prove that
// what the host gets is masked.
func (c extractConfig) Validate() error {
	if c.Limit < 0 {
		return &worker.ConfigError{Field: "limit", Reason: fmt.Sprintf("limit %d is negative (password %s)", c.Limit, c.Password)}
	}
	return nil
}

// typedWorker has a driver that declared its config (extract) and one
// that did not (free); runs counts the runs of extract.
func typedWorker(t *testing.T, runs *atomic.Int32) *worker.Worker {
	w := worker.New("t", "1")
	w.WorkDir = t.TempDir()
	w.Register("extract", worker.Typed(func(ctx context.Context, s *worker.Step, cfg extractConfig) error {
		runs.Add(1)
		return s.Event("extracted", map[string]any{"table": cfg.Table})
	}))
	w.RegisterFunc("free", func(ctx context.Context, s *worker.Step) error { return nil })
	return w
}

// TestPrepareChecksDeclaredConfigs: prepare checks the config of every
// step whose driver declared one (worker.Typed), and refuses the first
// that does not fit with -32006, naming the step and the field in data
// and message, with secrets masked, before anything of the session is
// set up (no session_initialized). The worker stays usable: a corrected
// prepare succeeds. A driver that declared nothing is not checked.
func TestPrepareChecksDeclaredConfigs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		a, c    string // the configs of steps a and c, both extract
		step    string
		field   string
		message string
	}{
		{"a typo in the last step", `{"table":"t"}`, `{"tabel":"t"}`,
			"c", "tabel", `unknown key "tabel" (did you mean "table"?)`},
		{"a wrong type", `{"limit":"ten"}`, `{}`, "a", "limit", `"limit": got a JSON string, want int`},
		{"a refused value, its secret masked", `{"limit":-1,"password":"hunter22"}`, `{}`,
			"a", "limit", `limit -1 is negative (password ***MASKED***)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var runs atomic.Int32
			h := serveRaw(t, typedWorker(t, &runs))
			steps := fmt.Sprintf(`[{"id":"a","driver":"extract","config":%s},{"id":"b","driver":"free","config":{"not":"checked"}},{"id":"c","driver":"extract","config":%s}]`, tc.a, tc.c)
			h.send(t, `{"jsonrpc":"2.0","id":1,"method":"prepare","params":{"session_id":"s1","manifest":{"steps":`+steps+`}}}`)
			notifs, resp := h.recv(t, 1)
			if len(notifs) != 0 {
				t.Errorf("notifications before the refusal: %v", notifs)
			}
			e, _ := resp["error"].(map[string]any)
			if e == nil || e["code"] != float64(tproxy.CodeInvalidConfig) {
				t.Fatalf("prepare answered %v, want error %d", resp, tproxy.CodeInvalidConfig)
			}
			data, _ := e["data"].(map[string]any)
			if data["step_id"] != tc.step || data["field"] != tc.field || data["message"] != tc.message {
				t.Errorf("data = %v, want step_id %q, field %q, message %q", data, tc.step, tc.field, tc.message)
			}
			if msg, _ := e["message"].(string); !strings.Contains(msg, fmt.Sprintf("step %q", tc.step)) || !strings.Contains(msg, tc.message) ||
				strings.Contains(msg, "hunter22") {
				t.Errorf("message = %q, want the step, the reason, no secret", msg)
			}

			good := `[{"id":"a","driver":"extract","config":{"table":"t"}},{"id":"b","driver":"free","config":{"not":"checked"}}]`
			h.send(t, `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s2","manifest":{"steps":`+good+`}}}`)
			if _, resp := h.recv(t, 2); resp["result"] == nil {
				t.Errorf("the corrected prepare answered %v", resp)
			}
			if n := runs.Load(); n != 0 {
				t.Errorf("the driver ran %d times", n)
			}
		})
	}
}

// TestTypedChecksAtExecStep: a step whose config prepare did not see (a
// host calling exec_step with another config) is checked when it runs:
// the driver's function is not called and the step fails with error type
// config, through the usual lifecycle.
func TestTypedChecksAtExecStep(t *testing.T) {
	var runs atomic.Int32
	h := serveRaw(t, typedWorker(t, &runs))
	h.send(t, `{"jsonrpc":"2.0","id":1,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"extract","config":{"table":"t"}}]}}}`)
	h.recv(t, 1)
	h.send(t, `{"jsonrpc":"2.0","id":2,"method":"exec_step","params":{"step_id":"a","driver":"extract","config":{"tabel":"t"}}}`)
	notifs, resp := h.recv(t, 2)
	e, _ := resp["error"].(map[string]any)
	if e == nil || e["code"] != float64(tproxy.CodeStepFailed) {
		t.Fatalf("exec_step answered %v, want %d", resp, tproxy.CodeStepFailed)
	}
	data, _ := e["data"].(map[string]any)
	if data["error_type"] != tproxy.ErrorTypeConfig || !strings.Contains(data["message"].(string), `did you mean "table"?`) {
		t.Errorf("failure = %v, want error_type config naming the key", data)
	}
	var names []string
	for _, n := range notifs {
		if n["method"] == "event" {
			names = append(names, n["params"].(map[string]any)["name"].(string))
		}
	}
	if strings.Join(names, ",") != "step_start,step_failed" {
		t.Errorf("events %v, want step_start, step_failed", names)
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("the driver's function ran %d times", n)
	}
}

// TestTypedHandsTheConfig: Typed decodes the config for the driver's
// function; a pointer or map type works as well as a struct.
func TestTypedHandsTheConfig(t *testing.T) {
	var got []string
	w := worker.New("t", "1")
	w.WorkDir = t.TempDir()
	w.Register("struct", worker.Typed(func(ctx context.Context, s *worker.Step, cfg extractConfig) error {
		got = append(got, fmt.Sprintf("struct %s %d", cfg.Table, cfg.Limit))
		return nil
	}))
	w.Register("pointer", worker.Typed(func(ctx context.Context, s *worker.Step, cfg *extractConfig) error {
		got = append(got, fmt.Sprintf("pointer %s", cfg.Table))
		return nil
	}))
	w.Register("map", worker.Typed(func(ctx context.Context, s *worker.Step, cfg map[string]int) error {
		if cfg == nil {
			return errors.New("nil map")
		}
		got = append(got, fmt.Sprintf("map %d", cfg["n"]))
		return nil
	}))
	h := serveRaw(t, w)
	h.send(t, `{"jsonrpc":"2.0","id":1,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"struct","config":{"table":"t","limit":3}},{"id":"b","driver":"pointer","config":{"table":"u"}},{"id":"c","driver":"map","config":{"n":7}}]}}}`)
	if _, resp := h.recv(t, 1); resp["result"] == nil {
		t.Fatalf("prepare answered %v", resp)
	}
	for i, st := range []string{`"a","driver":"struct","config":{"table":"t","limit":3}`, `"b","driver":"pointer","config":{"table":"u"}`, `"c","driver":"map","config":{"n":7}`} {
		h.send(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"exec_step","params":{"step_id":%s}}`, i+2, st))
		if _, resp := h.recv(t, i+2); resp["result"] == nil {
			t.Fatalf("exec_step %s answered %v", st, resp)
		}
	}
	if want := "struct t 3,pointer u,map 7"; strings.Join(got, ",") != want {
		t.Errorf("the drivers got %q, want %q", strings.Join(got, ","), want)
	}
}

// TestConfigMistakeFailsTheRunBeforeAnyStep: through the real host, a
// typo in the last step's config fails the run at prepare, as a
// *tproxy.ManifestError naming that step and the key, with status kind
// invalid_manifest and no step started.
func TestConfigMistakeFailsTheRunBeforeAnyStep(t *testing.T) {
	var runs atomic.Int32
	w := typedWorker(t, &runs)
	w.Logger = slog.New(slog.DiscardHandler)
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{
		{ID: "a", Driver: "extract", Config: map[string]any{"table": "orders"}},
		{ID: "b", Driver: "free", Needs: []string{"a"}},
		{ID: "c", Driver: "extract", Needs: []string{"b"}, Config: map[string]any{"tabel": "items"}},
	}}
	sink := &logsink.Memory{}
	st, err := host.RunManifest(t.Context(), &transport.InMemory{Serve: wiretest.Serve(t, w.Serve, wiretest.Both)},
		host.RunSpec{Manifest: m, Dir: t.TempDir(), Sink: sink})
	var me *tproxy.ManifestError
	if !errors.As(err, &me) || me.StepID != "c" || !strings.Contains(me.Reason, `unknown key "tabel" (did you mean "table"?)`) {
		t.Fatalf("RunManifest = %v (%T), want a ManifestError for step c naming the key", err, err)
	}
	if st == nil || st.Failure == nil || st.Failure.Kind != host.FailureInvalidManifest || st.Failure.StepID != "c" || st.StepsCompleted != 0 {
		t.Errorf("status %+v, failure %+v: want invalid_manifest for step c, no step completed", st, st.Failure)
	}
	for _, e := range sink.Events() {
		if e.Name == "step_start" {
			t.Errorf("step %s started", e.StepID)
		}
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("the driver ran %d times", n)
	}
}
