package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tproxy/tproxy/worker"
)

// Table is the data flowing between the steps. It stays in the worker;
// only its Summary crosses the wire.
type Table struct {
	Header []string
	Rows   [][]string
}

// Summary implements worker.Summarizer.
func (t *Table) Summary() any {
	return map[string]any{"type": "table", "columns": t.Header, "rows": len(t.Rows)}
}

func (t *Table) column(name string) (int, error) {
	i := slices.Index(t.Header, name)
	if i < 0 {
		return 0, fmt.Errorf("no column %q (columns: %s)", name, strings.Join(t.Header, ", "))
	}
	return i, nil
}

// newWorker returns the pipeline's worker: the three CSV drivers.
func newWorker() *worker.Worker {
	w := worker.New("tproxy-csv-pipeline", "0.1.0")
	w.RegisterFunc("csv_extract", csvExtract)
	w.RegisterFunc("filter_aggregate", filterAggregate)
	w.RegisterFunc("csv_write", csvWrite)
	return w
}

// csvExtract reads config.path into a table kept as output "table".
func csvExtract(ctx context.Context, s *worker.Step) error {
	var cfg struct {
		Path          string `json:"path"`
		ProgressEvery int    `json:"progress_every"`
	}
	if err := s.DecodeConfig(&cfg); err != nil {
		return err
	}
	if cfg.Path == "" {
		return errors.New("csv_extract: config.path is required")
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = 100
	}
	f, err := os.Open(cfg.Path)
	if err != nil {
		return fmt.Errorf("csv_extract: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	header, err := r.Read()
	if err != nil {
		return fmt.Errorf("csv_extract: reading the header of %s: %w", cfg.Path, err)
	}
	t := &Table{Header: header}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("csv_extract: %s: %w", cfg.Path, err)
		}
		t.Rows = append(t.Rows, rec)
		if len(t.Rows)%cfg.ProgressEvery == 0 {
			s.Event("progress", map[string]any{"rows_read": len(t.Rows)})
		}
	}
	s.Logger().Info("extracted", "path", filepath.Base(cfg.Path), "rows", len(t.Rows))
	s.Metric("rows_read", float64(len(t.Rows)), worker.Unit("rows"))
	s.SetRows(int64(len(t.Rows)))
	s.SetOutput("table", t)
	return nil
}

// aggregateConfig: keep rows whose columns equal Where and are at least
// Min, group them by GroupBy, count them, and sum each Sum expression (a
// column, or a product of columns "a*b"), exactly, in decimal, written
// with its Decimals (an exact integer when zero).
type aggregateConfig struct {
	Where   map[string]string `json:"where"`
	Min     map[string]string `json:"min"`
	GroupBy string            `json:"group_by"`
	Sum     []struct {
		As       string `json:"as"`
		Expr     string `json:"expr"`
		Decimals int    `json:"decimals"`
	} `json:"sum"`
}

func filterAggregate(ctx context.Context, s *worker.Step) error {
	in, ok := s.Input("table")
	t, isTable := in.(*Table)
	if !ok || !isTable {
		return fmt.Errorf("filter_aggregate: input %q missing or not a table (%T)", "table", in)
	}
	var cfg aggregateConfig
	if err := s.DecodeConfig(&cfg); err != nil {
		return err
	}
	group, err := t.column(cfg.GroupBy)
	if err != nil {
		return fmt.Errorf("filter_aggregate: group_by: %w", err)
	}
	type cond struct {
		col int
		val string
		min *big.Rat
	}
	var conds []cond
	for _, k := range slices.Sorted(maps.Keys(cfg.Where)) {
		i, err := t.column(k)
		if err != nil {
			return fmt.Errorf("filter_aggregate: where: %w", err)
		}
		conds = append(conds, cond{col: i, val: cfg.Where[k]})
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.Min)) {
		i, err := t.column(k)
		if err != nil {
			return fmt.Errorf("filter_aggregate: min: %w", err)
		}
		m, ok := new(big.Rat).SetString(cfg.Min[k])
		if !ok {
			return fmt.Errorf("filter_aggregate: min.%s: %q is not a number", k, cfg.Min[k])
		}
		conds = append(conds, cond{col: i, min: m})
	}
	exprs := make([][]int, len(cfg.Sum))
	for j, sm := range cfg.Sum {
		for _, name := range strings.Split(sm.Expr, "*") {
			i, err := t.column(strings.TrimSpace(name))
			if err != nil {
				return fmt.Errorf("filter_aggregate: sum %q: %w", sm.As, err)
			}
			exprs[j] = append(exprs[j], i)
		}
	}

	counts := map[string]int{}
	sums := map[string][]*big.Rat{}
	kept := 0
rows:
	for n, row := range t.Rows {
		for _, c := range conds {
			if c.min == nil && row[c.col] != c.val {
				continue rows
			}
			if c.min != nil {
				v, ok := new(big.Rat).SetString(row[c.col])
				if !ok || v.Cmp(c.min) < 0 {
					continue rows
				}
			}
		}
		kept++
		key := row[group]
		if sums[key] == nil {
			sums[key] = make([]*big.Rat, len(exprs))
			for j := range exprs {
				sums[key][j] = new(big.Rat)
			}
		}
		counts[key]++
		for j, cols := range exprs {
			prod := big.NewRat(1, 1)
			for _, c := range cols {
				v, ok := new(big.Rat).SetString(row[c])
				if !ok {
					return fmt.Errorf("filter_aggregate: row %d: column %s: %q is not a number", n+2, t.Header[c], row[c])
				}
				prod.Mul(prod, v)
			}
			sums[key][j].Add(sums[key][j], prod)
		}
	}

	out := &Table{Header: []string{cfg.GroupBy, "orders"}}
	for _, sm := range cfg.Sum {
		out.Header = append(out.Header, sm.As)
	}
	for _, key := range slices.Sorted(maps.Keys(counts)) {
		row := []string{key, fmt.Sprint(counts[key])}
		for j, v := range sums[key] {
			row = append(row, decimal(v, cfg.Sum[j].Decimals))
		}
		out.Rows = append(out.Rows, row)
	}
	s.Metric("rows_filtered_out", float64(len(t.Rows)-kept), worker.Unit("rows"))
	s.Event("aggregated", map[string]any{"groups": len(out.Rows), "rows_kept": kept})
	s.SetRows(int64(kept))
	s.SetOutput("table", out)
	return nil
}

// decimal formats v with d decimals, or as an integer when v is one and d
// is zero.
func decimal(v *big.Rat, d int) string {
	if d == 0 && v.IsInt() {
		return v.Num().String()
	}
	return v.FloatString(d)
}

// csvWrite writes input "table" to config.file in the step's artifact
// directory: the host fetches it into the session directory.
func csvWrite(ctx context.Context, s *worker.Step) error {
	in, ok := s.Input("table")
	t, isTable := in.(*Table)
	if !ok || !isTable {
		return fmt.Errorf("csv_write: input %q missing or not a table (%T)", "table", in)
	}
	var cfg struct {
		File string `json:"file"`
	}
	if err := s.DecodeConfig(&cfg); err != nil {
		return err
	}
	if cfg.File == "" || filepath.Base(cfg.File) != cfg.File {
		return fmt.Errorf("csv_write: config.file must be a plain file name, got %q", cfg.File)
	}
	f, err := os.Create(filepath.Join(s.ArtifactDir(), cfg.File))
	if err != nil {
		return fmt.Errorf("csv_write: %w", err)
	}
	w := csv.NewWriter(f)
	w.Write(t.Header)
	w.WriteAll(t.Rows)
	if err := errors.Join(w.Error(), f.Close()); err != nil {
		return fmt.Errorf("csv_write: %w", err)
	}
	s.Metric("rows_written", float64(len(t.Rows)), worker.Unit("rows"))
	s.SetRows(int64(len(t.Rows)))
	return nil
}
