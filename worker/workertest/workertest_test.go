package workertest_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/worker"
	"github.com/tproxy/tproxy/worker/workertest"
)

func TestMain(m *testing.M) {
	// The taps of Run's workers (export_test.go) report here.
	goleak.VerifyTestMain(wiretest.Main(m))
}

// table is an output type of the test's own: Run must hand it back as
// itself, not as what JSON would make of it.
type table struct{ rows []string }

// Summary is what crosses the wire in place of a table.
func (t *table) Summary() any { return map[string]any{"rows": len(t.rows)} }

// join reads the inputs it is given, reports in every way a step can, and
// keeps an output.
func join(ctx context.Context, s *worker.Step) error {
	var cfg struct {
		Sep string `json:"sep"`
	}
	if err := s.DecodeConfig(&cfg); err != nil {
		return err
	}
	var parts []string
	for _, name := range s.Inputs() {
		v, _ := s.Input(name)
		t, ok := v.(*table)
		if !ok {
			return worker.Fail(tproxy.ErrorTypeInput, errors.New("input "+name+" is not a table"))
		}
		parts = append(parts, t.rows...)
	}
	out := &table{rows: []string{strings.Join(parts, cfg.Sep)}}
	s.Event("joined", map[string]any{"inputs": s.Inputs(), "id": s.ID(), "driver": s.Driver()})
	s.Metric("parts", float64(len(parts)), worker.Unit("rows"))
	s.Logger().Debug("joining", "sep", cfg.Sep)
	s.SetRows(int64(len(parts)))
	s.SetOutput("joined", out)
	s.SetOutput("count", len(parts))
	return os.WriteFile(filepath.Join(s.ArtifactDir(), "joined.txt"), []byte(out.rows[0]), 0o644)
}

func names(evs []tproxy.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Name)
	}
	return out
}

// TestRunSuccess: Run hands the driver its config and inputs (Go values,
// listed by Step.Inputs in order), and returns the step's own records
// only (not the helper steps'), the rows, the outputs as the Go values
// themselves, their summaries, the logs at debug level, and the fetched
// artifacts.
func TestRunSuccess(t *testing.T) {
	in := map[string]any{"b": &table{rows: []string{"y", "z"}}, "a": &table{rows: []string{"x"}}}
	res, err := workertest.Run(t.Context(), worker.DriverFunc(join), map[string]any{"sep": "+"}, in)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(res.Events); !slices.Equal(got, []string{"step_start", "joined", "step_complete"}) {
		t.Errorf("events %v", got)
	}
	for _, e := range res.Events {
		if e.StepID != "step" {
			t.Errorf("event %s of step %q, want step", e.Name, e.StepID)
		}
	}
	if d := res.Events[1].Data; !slices.Equal(d["inputs"].([]any), []any{"a", "b"}) || d["id"] != "step" || d["driver"] != "driver" {
		t.Errorf("joined data = %v, want inputs [a b] sorted, id step, driver driver", d)
	}
	var metrics []string
	for _, m := range res.Metrics {
		metrics = append(metrics, m.Name)
	}
	if !slices.Equal(metrics, []string{"parts", "rows_processed", "step_duration_ms"}) {
		t.Errorf("metrics %v", metrics)
	}
	if res.Rows != 3 {
		t.Errorf("rows %d, want 3", res.Rows)
	}
	joined, ok := res.Outputs["joined"].(*table)
	if !ok || !slices.Equal(joined.rows, []string{"x+y+z"}) || res.Outputs["count"] != 3 {
		t.Errorf("outputs %#v, want the *table x+y+z and count 3", res.Outputs)
	}
	if s, _ := json.Marshal(res.Summaries); string(s) != `{"count":{"type":"int","value":3},"joined":{"rows":1}}` {
		t.Errorf("summaries %s", s)
	}
	if len(res.Logs) != 1 || res.Logs[0].Level != "DEBUG" || res.Logs[0].Message != "joining" ||
		res.Logs[0].StepID != "step" || res.Logs[0].Attrs["sep"] != "+" {
		t.Errorf("logs %+v, want the one debug record", res.Logs)
	}
	if string(res.Artifacts["joined.txt"]) != "x+y+z" || string(res.Artifacts[worker.CleanedConfigFile]) == "" {
		t.Errorf("artifacts %q, want joined.txt and %s", res.Artifacts, worker.CleanedConfigFile)
	}
}

// TestRunFailures: a failed step comes back with its Result (the
// lifecycle, the artifacts, no outputs) and a *host.StepError whose
// ErrorType is the kind of failure; a declared config that does not fit
// fails before the step runs, as a *tproxy.ManifestError naming the
// field.
func TestRunFailures(t *testing.T) {
	type cfg struct {
		Table string `json:"table"`
	}
	typed := worker.Typed(func(ctx context.Context, s *worker.Step, c cfg) error { return nil })
	for _, tc := range []struct {
		name      string
		driver    worker.Driver
		config    map[string]any
		inputs    map[string]any
		errorType string
		message   string
	}{
		{"an error", worker.DriverFunc(func(ctx context.Context, s *worker.Step) error {
			return errors.New("source table missing")
		}), nil, nil, tproxy.ErrorTypeDriver, "source table missing"},
		{"a panic", worker.DriverFunc(func(ctx context.Context, s *worker.Step) error {
			panic("driver bug")
		}), nil, nil, tproxy.ErrorTypePanic, "panic: driver bug"},
		{"an unknown key, read by DecodeConfig", worker.DriverFunc(join), map[string]any{"seperator": ","}, nil,
			tproxy.ErrorTypeConfig, `step "step": config: unknown key "seperator" (known keys: "sep")`},
		{"an input of the wrong kind", worker.DriverFunc(join), nil, map[string]any{"a": "text"},
			tproxy.ErrorTypeInput, "input a is not a table"},
		{"a driver's own kind", worker.DriverFunc(func(ctx context.Context, s *worker.Step) error {
			return worker.Fail("quota", errors.New("over quota"))
		}), nil, nil, "quota", "over quota"},
		{"a deadline inside the driver", worker.DriverFunc(func(ctx context.Context, s *worker.Step) error {
			ctx, cancel := context.WithTimeout(ctx, 0)
			defer cancel()
			<-ctx.Done()
			return ctx.Err()
		}), nil, nil, tproxy.ErrorTypeTimeout, "context deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := workertest.Run(t.Context(), tc.driver, tc.config, tc.inputs)
			var se *host.StepError
			if !errors.As(err, &se) || se.ErrorType != tc.errorType || se.Message != tc.message {
				t.Fatalf("err = %v, want a StepError (%s) %q", err, tc.errorType, tc.message)
			}
			if res == nil {
				t.Fatal("no Result for a step that ran")
			}
			if got := names(res.Events); !slices.Equal(got, []string{"step_start", "step_failed"}) {
				t.Errorf("events %v", got)
			}
			if res.Outputs != nil || res.Artifacts[worker.CleanedConfigFile] == nil {
				t.Errorf("outputs %v, artifacts %v: want none, and the cleaned config", res.Outputs, res.Artifacts)
			}
		})
	}

	t.Run("a declared config that does not fit", func(t *testing.T) {
		res, err := workertest.Run(t.Context(), typed, map[string]any{"tabel": "t"}, nil)
		var me *tproxy.ManifestError
		if !errors.As(err, &me) || me.StepID != "step" || !strings.Contains(me.Reason, `unknown key "tabel" (did you mean "table"?)`) {
			t.Fatalf("err = %v (%T), want a ManifestError for step naming the key", err, err)
		}
		if res != nil {
			t.Errorf("Result %+v for a step that never ran", res)
		}
	})
}

// TestRunContextEnded: a context that ends before the step comes back as
// its error, with no Result.
func TestRunContextEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res, err := workertest.Run(ctx, worker.DriverFunc(join), nil, nil)
	if !errors.Is(err, context.Canceled) || res != nil {
		t.Errorf("Run = %v, %v; want no Result and context.Canceled", res, err)
	}
}
