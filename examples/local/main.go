// Command local runs the tproxy story end to end on this machine: a host
// starts a worker subprocess (this same binary, re-executed), drives a
// three-step session over JSON-RPC on the worker's stdin/stdout, prints
// every response and every event and metric as it streams, and writes the
// session's logs.
//
//	go run ./examples/local [-dir DIR]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/demo"
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
	dir := flag.String("dir", "", "session directory (default: a new directory under the system temp dir)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *dir); err != nil {
		fmt.Fprintf(os.Stderr, "\n❌ %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string) error {
	sessionID := "local_" + time.Now().UTC().Format("20060102T150405.000000")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "tproxy-sessions", sessionID)
	}

	fmt.Println("🚀 Starting tproxy local transparent proxy")
	fmt.Println()
	fmt.Println("1️⃣ Starting worker subprocess...")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	tr := &transport.Subprocess{
		Path:   exe,
		Env:    append(os.Environ(), workerEnv+"=1"),
		Stderr: &prefixWriter{prefix: "   [worker stderr] "},
	}
	// Worker log records arrive as slog records; show them on stderr.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := host.RunManifest(ctx, tr, host.RunSpec{
		SessionID: sessionID,
		Dir:       dir,
		Manifest:  demo.Manifest(),
		Sink:      logsink.NewConsole(os.Stdout),
		Options:   []host.Option{host.WithLogger(logger), host.WithTrace(story)},
	})
	if st != nil && st.Exit != nil {
		fmt.Printf("   Worker exited: %v\n\n", st.Exit)
	}
	if err != nil {
		if path := filepath.Join(dir, host.StatusFile); fileExists(path) {
			fmt.Fprintf(os.Stderr, "📁 %s\n", path)
		}
		return err
	}
	return summarize(dir)
}

// story prints each command as it is sent and its response, the way the
// seed prototype did; the events the command causes stream in between.
func story(method string, params any) func(any, error) {
	switch method {
	case tproxy.MethodPing:
		fmt.Println("→ Sending PING...")
	case tproxy.MethodPrepare:
		fmt.Println("→ Sending PREPARE...")
	case tproxy.MethodExecStep:
		fmt.Printf("→ Sending EXEC_STEP for %s...\n", params.(tproxy.ExecStepParams).StepID)
	case tproxy.MethodCleanup:
		fmt.Println("→ Sending CLEANUP...")
	default:
		return nil // artifact fetches are not part of the story
	}
	return func(res any, err error) {
		if err != nil {
			fmt.Printf("   Error: %v\n\n", err)
			return
		}
		show(res)
		if method == tproxy.MethodPing {
			if p, ok := res.(*tproxy.PingResult); ok {
				fmt.Printf("✅ Worker started: %s %s (protocol %d), drivers: %s\n\n", p.Worker.Name, p.Worker.Version, p.Protocol, strings.Join(p.Worker.Drivers, ", "))
				fmt.Println("2️⃣ Sending commands:")
				fmt.Println()
			}
		}
	}
}

// show prints a response the way the seed prototype did.
func show(v any) {
	b, _ := json.Marshal(v)
	fmt.Printf("   Response: %s\n\n", b)
}

// summarize prints what the session directory holds.
func summarize(dir string) error {
	events, err := logsink.ReadLines(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		return err
	}
	metrics, err := logsink.ReadLines(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		return err
	}
	if len(events) == 0 || len(metrics) == 0 {
		return errors.New("the session logs are empty")
	}
	fmt.Println("3️⃣ Collected logs:")
	fmt.Printf("📊 Events (%d total), the last three:\n", len(events))
	for _, e := range events[max(0, len(events)-3):] {
		fmt.Printf("   #%v %v %v\n", e["seq"], e["event"], stepOf(e))
	}
	fmt.Printf("📈 Metrics (%d total):\n", len(metrics))
	for _, m := range metrics {
		unit := ""
		if u, ok := m["unit"]; ok {
			unit = fmt.Sprint(" ", u)
		}
		fmt.Printf("   %v = %v%s %v\n", m["metric"], m["value"], unit, stepOf(m))
	}
	fmt.Printf("📁 Logs: %s\n   %s\n   %s\n", filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "metrics.jsonl"), filepath.Join(dir, host.StatusFile))
	fmt.Println()
	fmt.Println("✅ Completed successfully!")
	return nil
}

func stepOf(line map[string]any) string {
	if s, ok := line["step_id"]; ok {
		return fmt.Sprintf("(step %v)", s)
	}
	return ""
}

// prefixWriter prints the worker's stderr, line by line, indented and
// marked. The transport calls it from one goroutine.
type prefixWriter struct {
	prefix  string
	partial []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		fmt.Fprintf(os.Stderr, "%s%s\n", p.prefix, p.partial[:i])
		p.partial = p.partial[i+1:]
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
