// Command fanout runs many pipelines at once through host.Many: by
// default 20 sessions of the demo's three-step pipeline, 4 at a time, each
// in its own worker subprocess (this binary, re-executed) and its own
// session directory, with a live progress line and a summary table.
//
//	go run ./examples/fanout [-n 20] [-p 4] [-rows 20000] [-fail-every 0] [-stop-on-failure] [-dir DIR]
//
// -fail-every k makes every k-th session fail in its first step, to show
// failures in the progress and the table; with -stop-on-failure the first
// failure cancels the rest. Ctrl-C cancels every session: each worker is
// stopped and each session directory still gets its status.json.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// workerEnv tells a re-executed copy of this binary to be the worker.
const workerEnv = "TPROXY_FANOUT_WORKER"

// config is what the flags set.
type config struct {
	n, parallelism, rows, failEvery int
	stopOnFailure                   bool
	dir                             string
	refresh                         time.Duration
}

func main() {
	if os.Getenv(workerEnv) == "1" {
		worker.Main(demo.NewWorker())
	}
	var cfg config
	flag.IntVar(&cfg.n, "n", 20, "number of sessions")
	flag.IntVar(&cfg.parallelism, "p", 4, "sessions at once")
	flag.IntVar(&cfg.rows, "rows", 20000, "rows each pipeline extracts (the transform step emits an event per 10)")
	flag.IntVar(&cfg.failEvery, "fail-every", 0, "make every k-th session fail (0: none)")
	flag.BoolVar(&cfg.stopOnFailure, "stop-on-failure", false, "cancel the other sessions once one fails")
	flag.StringVar(&cfg.dir, "dir", "", "parent of the session directories (default: a new directory under the system temp dir)")
	flag.Parse()
	cfg.refresh = 200 * time.Millisecond

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tr, err := workerTransport()
	if err == nil {
		_, err = run(ctx, cfg, tr, os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fanout: %v\n", err)
		os.Exit(1)
	}
}

// workerTransport starts each session's worker: this binary, re-executed.
func workerTransport() (transport.Transport, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return &transport.Subprocess{Path: exe, Env: []string{workerEnv + "=1"}}, nil
}

// run runs the fan-out, each session in a worker that tr starts, draws
// the progress line and the table on out, and returns the summary. A
// session that fails is reported in the table, not as run's error.
func run(ctx context.Context, cfg config, tr transport.Transport, out io.Writer) (*host.Summary, error) {
	if cfg.dir == "" {
		d, err := os.MkdirTemp("", "tproxy-fanout-")
		if err != nil {
			return nil, err
		}
		cfg.dir = d
	}
	quiet := []host.Option{host.WithLogger(slog.New(slog.DiscardHandler))}
	jobs := make([]host.Job, cfg.n)
	for i := range jobs {
		m := demo.Manifest()
		rows := cfg.rows + i*cfg.rows/10 // uneven sizes, so sessions end apart
		if cfg.failEvery > 0 && (i+1)%cfg.failEvery == 0 {
			rows = 0 // extract refuses: the session fails in its first step
		}
		m.Steps[0].Config = map[string]any{"rows": rows}
		id := fmt.Sprintf("fanout_%03d", i+1)
		jobs[i] = host.Job{Transport: tr, Spec: host.RunSpec{
			SessionID: id, Dir: filepath.Join(cfg.dir, id), Manifest: m, Options: quiet}}
	}

	fmt.Fprintf(out, "%d pipelines, %d at a time, session directories under %s\n", cfg.n, cfg.parallelism, cfg.dir)
	many := &host.Many{Parallelism: cfg.parallelism, StopOnFailure: cfg.stopOnFailure}
	stopDraw := draw(many, out, cfg.refresh)
	sum, err := many.Run(ctx, jobs)
	stopDraw()
	var me *host.ManyError
	if err != nil && !errors.As(err, &me) {
		return nil, err
	}
	table(out, sum)
	return sum, nil
}

// draw redraws a progress line every refresh until the returned func is
// called, which draws it a last time.
func draw(m *host.Many, out io.Writer, refresh time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	line := func(p host.Progress, rate float64) {
		fmt.Fprintf(out, "\r%3d/%d done  %2d running  %2d waiting  %2d failed  %2d cancelled  %7d events  %8.0f events/s ",
			p.Done(), p.Total, p.Running, p.Waiting, p.Failed, p.Cancelled, p.Events, rate)
	}
	wg.Go(func() {
		tick := time.NewTicker(refresh)
		defer tick.Stop()
		prev := m.Progress()
		for {
			select {
			case <-done:
				p := m.Progress()
				line(p, p.EventsPerSecond())
				fmt.Fprintln(out)
				return
			case <-tick.C:
				p := m.Progress()
				// The current rate, over the last refresh.
				line(p, float64(p.Events-prev.Events)/(p.Elapsed-prev.Elapsed).Seconds())
				prev = p
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// table prints one row per session and the totals.
func table(out io.Writer, sum *host.Summary) {
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tOUTCOME\tSTEPS\tROWS\tDURATION\tEXIT\tFAILURE")
	for _, r := range sum.Results {
		st := r.Status
		var rows int64
		for _, s := range st.Steps {
			if s.ID == "extract" {
				rows = s.RowsProcessed
			}
		}
		exit := "-"
		if st.Exit != nil {
			exit = st.Exit.String()
		}
		failure := ""
		if f := st.Failure; f != nil {
			failure = f.Kind
			if f.StepID != "" {
				failure += " in " + f.StepID
			}
			if reason := firstLine(f.Reason); reason != "" {
				failure += ": " + reason
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%v\t%s\t%s\n", r.SessionID, st.Outcome, st.StepsCompleted, st.StepsTotal,
			rows, time.Duration(st.DurationMS)*time.Millisecond, exit, failure)
	}
	tw.Flush()
	fmt.Fprintf(out, "\n%d succeeded, %d failed, %d cancelled in %v; %d events (%.0f/s), %d metrics\n",
		sum.Succeeded, sum.Failed, sum.Cancelled, sum.Wall.Round(time.Millisecond), sum.Events, sum.EventsPerSecond(), sum.Metrics)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	const max = 60
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
