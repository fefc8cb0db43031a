// Package demo holds the drivers and the three-step manifest that
// examples/local runs and the tests replay over every transport.
package demo

import (
	"context"
	"fmt"
	"sort"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/worker"
)

// Row is one record flowing through the demo pipeline.
type Row struct {
	ID     int
	Region string
	Amount int
}

// Rows is the output the extract step keeps in the worker.
type Rows []Row

// Summary implements worker.Summarizer: only this crosses the wire.
func (r Rows) Summary() any { return map[string]any{"type": "rows", "count": len(r)} }

var regions = []string{"north", "south", "east", "west"}

// NewWorker returns a worker with the demo drivers registered.
func NewWorker() *worker.Worker {
	w := worker.New("tproxy-demo", "0.1.0")
	Register(w)
	return w
}

// Register adds the demo drivers to w: extract, transform and load.
func Register(w *worker.Worker) {
	w.RegisterFunc("extract", extract)
	w.RegisterFunc("transform", transform)
	w.RegisterFunc("load", load)
}

// extract makes config.rows deterministic rows.
func extract(ctx context.Context, s *worker.Step) error {
	var cfg struct {
		Rows int `json:"rows"`
	}
	if err := s.DecodeConfig(&cfg); err != nil {
		return err
	}
	if cfg.Rows <= 0 {
		return fmt.Errorf("extract: config.rows must be positive, got %d", cfg.Rows)
	}
	rows := make(Rows, cfg.Rows)
	for i := range rows {
		rows[i] = Row{ID: i + 1, Region: regions[i%len(regions)], Amount: (i*37)%100 + 1}
	}
	s.Logger().Info("extracted rows", "count", len(rows))
	s.Metric("rows_read", float64(len(rows)), worker.Unit("rows"))
	s.SetRows(int64(len(rows)))
	s.SetOutput("rows", rows)
	return nil
}

// transform keeps rows with amount >= config.min_amount and sums them per
// region.
func transform(ctx context.Context, s *worker.Step) error {
	in, ok := s.Input("rows")
	rows, isRows := in.(Rows)
	if !ok || !isRows {
		return fmt.Errorf("transform: input %q missing or not rows (%T)", "rows", in)
	}
	var cfg struct {
		MinAmount int `json:"min_amount"`
	}
	if err := s.DecodeConfig(&cfg); err != nil {
		return err
	}
	totals := map[string]int{}
	kept := 0
	for i, r := range rows {
		if r.Amount >= cfg.MinAmount {
			totals[r.Region] += r.Amount
			kept++
		}
		if (i+1)%10 == 0 {
			s.Event("progress", map[string]any{"done": i + 1, "total": len(rows)})
		}
	}
	s.Metric("rows_filtered_out", float64(len(rows)-kept), worker.Unit("rows"))
	s.SetRows(int64(kept))
	s.SetOutput("totals", totals)
	return nil
}

// load "writes" the totals: it emits one event per region, sorted.
func load(ctx context.Context, s *worker.Step) error {
	in, ok := s.Input("totals")
	totals, isMap := in.(map[string]int)
	if !ok || !isMap {
		return fmt.Errorf("load: input %q missing or not totals (%T)", "totals", in)
	}
	keys := make([]string, 0, len(totals))
	for k := range totals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s.Event("region_total", map[string]any{"region": k, "amount": totals[k]})
	}
	s.Metric("rows_written", float64(len(keys)), worker.Unit("rows"))
	s.SetRows(int64(len(keys)))
	return nil
}

// Manifest is the demo's three-step pipeline.
func Manifest() tproxy.Manifest {
	return tproxy.Manifest{
		Pipeline: map[string]any{"name": "demo-pipeline"},
		Steps: []tproxy.StepSpec{
			{ID: "extract", Driver: "extract", Config: map[string]any{"rows": 42}},
			{ID: "transform", Driver: "transform", Config: map[string]any{"min_amount": 20}, Needs: []string{"extract"},
				Inputs: map[string]tproxy.InputRef{"rows": {FromStep: "extract", Key: "rows"}}},
			{ID: "load", Driver: "load", Needs: []string{"transform"},
				Inputs: map[string]tproxy.InputRef{"totals": {FromStep: "transform", Key: "totals"}}},
		},
	}
}
