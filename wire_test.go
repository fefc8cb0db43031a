package tproxy_test

import (
	"context"
	"log/slog"
	"testing"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(wiretest.Main(m)) // a tap reporting after its test ended fails the run
}

// TestExampleWire runs Example's session, the same worker and the same
// calls, with every frame of the host and the worker validated against
// docs/schema. Example is documentation: its code is shown as it is, so
// it cannot take an internal test helper itself.
func TestExampleWire(t *testing.T) {
	w := worker.New("counter", "1.0.0")
	w.Logger = slog.New(slog.DiscardHandler)
	w.RegisterFunc("count", func(ctx context.Context, s *worker.Step) error {
		var cfg struct {
			N int `json:"n"`
		}
		if err := s.DecodeConfig(&cfg); err != nil {
			return err
		}
		for i := range cfg.N {
			if err := s.Event("counted", map[string]any{"i": i}); err != nil {
				return err
			}
		}
		s.SetRows(int64(cfg.N))
		return nil
	})

	ctx := t.Context()
	sink := &logsink.Memory{}
	c, err := host.Start(ctx, &transport.InMemory{Serve: wiretest.Serve(t, w.Serve, wiretest.Both)}, host.WithSink(sink))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	manifest := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "count-1", Driver: "count"}}}
	if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "run_1", Manifest: manifest}); err != nil {
		t.Fatal(err)
	}
	res, err := c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "count-1", Driver: "count", Config: map[string]any{"n": 2}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if res.RowsProcessed != 2 || len(sink.Events()) != 6 {
		t.Errorf("rows %d, %d events; want Example's 2 and 6", res.RowsProcessed, len(sink.Events()))
	}
}
