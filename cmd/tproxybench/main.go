// Command tproxybench measures tproxy against raw pipes and plain
// sourcegraph/jsonrpc2 on this machine, in one run, and prints a Markdown
// table with the ratios and the performance goals (docs/performance.md):
//
//	go run ./cmd/tproxybench [-count 3] [-events 300000]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/tproxy/tproxy/internal/bench"
)

func main() {
	bench.RunRole()
	cfg := bench.DefaultConfig
	flag.IntVar(&cfg.Count, "count", cfg.Count, "repetitions of each timed measurement (the median is shown)")
	flag.IntVar(&cfg.Pings, "pings", cfg.Pings, "round trips per ping measurement")
	flag.IntVar(&cfg.Steps, "steps", cfg.Steps, "empty steps per measurement")
	flag.IntVar(&cfg.Events, "events", cfg.Events, "events per stream measurement")
	flag.IntVar(&cfg.RSSEvents, "rss-events", cfg.RSSEvents, "events streamed for the RSS check")
	flag.IntVar(&cfg.Sessions, "sessions", cfg.Sessions, "idle in-memory sessions")
	flag.Parse()
	dir, err := os.MkdirTemp("", "tproxybench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	start, loadBefore := time.Now(), loadAvg()
	r, err := bench.Run(cfg, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	fmt.Printf("%s/%s, %d CPUs, %s; median of %d runs; %s, %.0f s; load average %s before, %s after\n\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), cfg.Count,
		start.Format("2006-01-02 15:04 MST"), time.Since(start).Seconds(), loadBefore, loadAvg())
	r.Print(os.Stdout)
}

// loadAvg is the 1, 5 and 15 minute load averages, "?" where there is no
// /proc/loadavg.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}
