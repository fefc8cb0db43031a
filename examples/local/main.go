// Command local runs the tproxy story end to end on this machine: a host
// starts a worker subprocess (this same binary, re-executed), drives a
// three-step session over JSON-RPC on the worker's stdin/stdout, prints
// every command, response, event and metric as it streams, and leaves a
// complete session directory (events.jsonl, metrics.jsonl, status.json,
// manifest.json, artifacts/).
//
//	go run ./examples/local [-dir DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/internal/story"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// workerEnv tells a re-executed copy of this binary to be the worker.
const workerEnv = "TPROXY_EXAMPLE_WORKER"

func main() {
	if os.Getenv(workerEnv) == "1" {
		worker.Main(demo.NewWorker())
	}
	dir := flag.String("dir", "", "session directory (default: a new directory under $TMPDIR/tproxy-sessions)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir); err != nil {
		fmt.Fprintf(os.Stderr, "\n❌ %v\n", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string) error {
	sessionID := "local_" + time.Now().UTC().Format("20060102T150405.000000")
	fmt.Println("🚀 Starting tproxy local transparent proxy")
	fmt.Println()
	fmt.Println("1️⃣ Starting worker subprocess...")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	tr := &transport.Subprocess{
		Path:   exe,
		Env:    []string{workerEnv + "=1"},
		Stderr: &story.PrefixWriter{Prefix: "   [worker stderr] "},
	}
	teller := &story.Teller{OnWorker: func(p *tproxy.PingResult) {
		fmt.Printf("✅ Worker started: %s %s (protocol %d), drivers: %s\n\n", p.Worker.Name, p.Worker.Version, p.Protocol, strings.Join(p.Worker.Drivers, ", "))
		fmt.Println("2️⃣ Sending commands:")
		fmt.Println()
	}}
	// Worker log records arrive as slog records; show warnings on stderr.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := host.RunManifest(ctx, tr, host.RunSpec{
		SessionID: sessionID,
		Dir:       dir,
		Manifest:  demo.Manifest(),
		Sink:      logsink.NewConsole(os.Stdout),
		Options:   []host.Option{host.WithLogger(logger), host.WithTrace(teller.Trace)},
	})
	if st != nil && st.Exit != nil {
		fmt.Printf("   Worker exited: %v\n\n", st.Exit)
	}
	if err != nil {
		if st != nil {
			if _, serr := os.Stat(filepath.Join(st.Dir, host.StatusFile)); serr == nil {
				fmt.Fprintf(os.Stderr, "📁 %s\n", filepath.Join(st.Dir, host.StatusFile))
			}
		}
		return err
	}
	return teller.Summarize(st)
}
