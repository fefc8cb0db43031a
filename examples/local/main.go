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
	sessionID := "local_" + time.Now().UTC().Format("20060102T150405")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "tproxy-sessions", sessionID)
	}
	files, err := logsink.OpenDir(dir, sessionID)
	if err != nil {
		return err
	}
	defer files.Close()

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
	c, err := host.Start(ctx, tr, host.WithSink(logsink.Multi(files, logsink.NewConsole(os.Stdout))), host.WithLogger(logger))
	if err != nil {
		return err
	}
	defer c.Close()
	info := c.Worker()
	pid := ""
	if p, ok := c.Process().(interface{ Pid() int }); ok {
		pid = fmt.Sprintf(", pid %d", p.Pid())
	}
	fmt.Printf("✅ Worker started: %s %s (protocol %d%s), drivers: %s\n\n", info.Worker.Name, info.Worker.Version, info.Protocol, pid, strings.Join(info.Worker.Drivers, ", "))

	fmt.Println("2️⃣ Sending commands:")
	fmt.Println()
	fmt.Println("→ Sending PING...")
	pong, err := c.Ping(ctx, "test-123")
	if err != nil {
		return err
	}
	show(pong)

	fmt.Println("→ Sending PREPARE...")
	m := demo.Manifest()
	ready, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: sessionID, Manifest: m})
	if err != nil {
		return err
	}
	show(ready)

	for _, st := range m.Steps {
		fmt.Printf("→ Sending EXEC_STEP for %s...\n", st.ID)
		res, err := c.ExecStep(ctx, tproxy.ExecStepParams{StepID: st.ID, Driver: st.Driver, Config: st.Config, Inputs: st.Inputs})
		if err != nil {
			return err
		}
		show(res)
	}

	fmt.Println("→ Sending CLEANUP...")
	cleaned, err := c.Cleanup(ctx)
	if err != nil {
		return err
	}
	show(cleaned)
	if err := c.Close(); err != nil {
		return err
	}
	if err := files.Close(); err != nil {
		return err
	}
	fmt.Printf("   Worker exited: %v\n\n", c.Process().Exit())
	return summarize(dir)
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
	fmt.Printf("📁 Logs: %s\n   %s\n", filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "metrics.jsonl"))
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
