// Command pipeline runs a real three-step CSV pipeline through tproxy:
// extract orders from a CSV file, keep the shipped ones and aggregate
// revenue per region, and write the result as a CSV artifact, which the
// host fetches into the session directory.
//
//	go run ./examples/pipeline [-inprocess] [-dir DIR] [-data FILE]
//
// By default the steps run in a worker subprocess (this binary,
// re-executed); -inprocess runs the same worker runtime in this process
// over the in-memory transport. Both leave the same session directory.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// workerEnv tells a re-executed copy of this binary to be the worker.
const workerEnv = "TPROXY_PIPELINE_WORKER"

// outputFile is the CSV the last step writes.
const outputFile = "region_revenue.csv"

//go:embed testdata/orders.csv
var ordersCSV []byte

func main() {
	if os.Getenv(workerEnv) == "1" {
		worker.Main(newWorker())
	}
	inProcess := flag.Bool("inprocess", false, "run the steps in this process instead of a worker subprocess")
	dir := flag.String("dir", "", "session directory (default: a new directory under $TMPDIR/tproxy-sessions)")
	data := flag.String("data", "", "orders CSV to read (default: the bundled testdata/orders.csv)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *data == "" {
		path, cleanup, err := bundledData()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer cleanup()
		*data = path
	}
	mode := "worker subprocess"
	if *inProcess {
		mode = "in-process worker"
	}
	fmt.Printf("🚀 tproxy pipeline: %s → filter/aggregate → %s (%s)\n\n", filepath.Base(*data), outputFile, mode)
	st, err := runPipeline(ctx, *inProcess, *dir, *data, &progress{})
	if st != nil {
		printSummary(st)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "\n❌ %v\n", err)
		stop()
		os.Exit(1)
	}
}

// manifest is the pipeline: the data file is the only thing that varies.
func manifest(dataPath string) tproxy.Manifest {
	table := func(from string) map[string]tproxy.InputRef {
		return map[string]tproxy.InputRef{"table": {FromStep: from, Key: "table"}}
	}
	return tproxy.Manifest{
		Pipeline: map[string]any{"name": "orders-revenue-by-region"},
		Steps: []tproxy.StepSpec{
			{ID: "extract", Driver: "csv_extract", Config: map[string]any{"path": dataPath, "progress_every": 50}},
			{ID: "transform", Driver: "filter_aggregate", Needs: []string{"extract"}, Inputs: table("extract"),
				Config: map[string]any{
					"where":    map[string]any{"status": "shipped"},
					"min":      map[string]any{"quantity": "2"},
					"group_by": "region",
					"sum": []any{
						map[string]any{"as": "units", "expr": "quantity"},
						map[string]any{"as": "revenue", "expr": "quantity*unit_price", "decimals": 2},
					},
				}},
			{ID: "load", Driver: "csv_write", Needs: []string{"transform"}, Inputs: table("transform"),
				Config: map[string]any{"file": outputFile}},
		},
	}
}

// runPipeline runs the pipeline into dir through a subprocess or the
// in-memory transport; sink, if not nil, sees every event as it arrives.
func runPipeline(ctx context.Context, inProcess bool, dir, dataPath string, sink *progress) (*host.Status, error) {
	var tr transport.Transport
	if inProcess {
		w := newWorker()
		w.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		tr = &transport.InMemory{Serve: w.Serve}
	} else {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		tr = &transport.Subprocess{Path: exe, Env: []string{workerEnv + "=1"}, Stderr: os.Stderr}
	}
	abs, err := filepath.Abs(dataPath)
	if err != nil {
		return nil, err
	}
	spec := host.RunSpec{
		Dir:      dir,
		Manifest: manifest(abs),
		Options:  []host.Option{host.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))},
	}
	if sink != nil {
		spec.Sink = sink
	}
	return host.RunManifest(ctx, tr, spec)
}

// bundledData writes the embedded orders CSV to a temporary file.
func bundledData() (string, func(), error) {
	dir, err := os.MkdirTemp("", "tproxy-pipeline-data-")
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, "orders.csv")
	if err := os.WriteFile(path, ordersCSV, 0o644); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return path, func() { os.RemoveAll(dir) }, nil
}

// progress prints one line per step as the step's events stream in.
type progress struct {
	mu sync.Mutex
}

// Event implements logsink.Sink.
func (p *progress) Event(_ context.Context, e tproxy.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Name {
	case "step_start":
		fmt.Printf("   ▶ %-10s started  (driver %v)\n", e.StepID, e.Data["driver"])
	case "progress":
		fmt.Printf("   … %-10s %v rows read\n", e.StepID, e.Data["rows_read"])
	case "step_complete":
		fmt.Printf("   ✓ %-10s %v rows in %v ms\n", e.StepID, e.Data["rows_processed"], e.Data["duration_ms"])
	case "step_failed":
		fmt.Printf("   ✗ %-10s %v: %v\n", e.StepID, e.Data["error_type"], e.Data["message"])
	}
	return nil
}

// Metric implements logsink.Sink.
func (p *progress) Metric(context.Context, tproxy.Metric) error { return nil }

func (p *progress) Log(context.Context, tproxy.LogRecord) error { return nil }

// Flush implements logsink.Sink.
func (p *progress) Flush() error { return nil }

func printSummary(st *host.Status) {
	fmt.Println()
	icon := "✅"
	if st.Outcome != host.OutcomeSuccess {
		icon = "❌"
	}
	fmt.Printf("%s %s: %d/%d steps in %v\n", icon, st.Outcome, st.StepsCompleted, st.StepsTotal,
		(time.Duration(st.DurationMS) * time.Millisecond).String())
	if st.Failure != nil {
		fmt.Printf("   failure: %s at step %q: %s\n", st.Failure.Kind, st.Failure.StepID, st.Failure.Reason)
	}
	fmt.Printf("📁 session directory: %s\n", st.Dir)
	for _, s := range st.Steps {
		fmt.Printf("   %-10s %-9s rows=%-4d artifacts=%d\n", s.ID, s.Status, s.RowsProcessed, len(s.Artifacts))
	}
	out := filepath.Join(st.Dir, host.ArtifactsDir, "load", outputFile)
	b, err := os.ReadFile(out)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) || st.Outcome == host.OutcomeSuccess {
			fmt.Printf("   (no output: %v)\n", err)
		}
		return
	}
	fmt.Printf("\n📄 %s\n%s", out, b)
}
