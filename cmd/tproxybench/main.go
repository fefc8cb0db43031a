// Command tproxybench measures tproxy against raw pipes on this machine and
// prints a table with the ratios and the performance goals:
//
//	go run ./bench/cmd/tproxybench [-count 3] [-events 300000]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"

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
	r, err := bench.Run(cfg, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	fmt.Printf("%s/%s, %d CPUs, %s; median of %d runs\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), cfg.Count)
	r.Print(os.Stdout)
}
