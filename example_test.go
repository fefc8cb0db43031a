package tproxy_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// The whole picture in one process: a worker with one driver, a host that
// drives it over the in-memory transport, and the events the step streamed
// back, in order. Swap the transport for a transport.Subprocess running
// the same worker through worker.Main and nothing else changes.
func Example() {
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

	ctx := context.Background()
	sink := &logsink.Memory{}
	c, err := host.Start(ctx, &transport.InMemory{Serve: w.Serve}, host.WithSink(sink))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	manifest := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "count-1", Driver: "count"}}}
	if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "run_1", Manifest: manifest}); err != nil {
		fmt.Println(err)
		return
	}
	res, err := c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "count-1", Driver: "count", Config: map[string]any{"n": 2}})
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := c.Cleanup(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("rows:", res.RowsProcessed)
	for _, e := range sink.Events() {
		fmt.Println(strings.TrimSpace(e.Name + " " + e.StepID))
	}
	// Output:
	// rows: 2
	// session_initialized
	// step_start count-1
	// counted count-1
	// counted count-1
	// step_complete count-1
	// session_cleanup
}
