// Command e2b runs the tproxy story of examples/local with the worker in an
// E2B sandbox: the host creates a sandbox, uploads the worker (this same
// program, as a static linux/amd64 binary), starts it through E2B's
// process service, drives the same three-step session over JSON-RPC,
// prints every response, event and metric as it streams plus the
// sandbox id and timings, writes the session's logs, and kills the
// sandbox.
//
//	E2B_API_KEY=e2b_… go run ./examples/e2b [-dir DIR] [-template base] [-timeout 5m]
//	go run ./examples/e2b -fake     # against the local, wire-faithful E2B (package e2btest)
//	E2B_API_KEY=e2b_… go run ./examples/e2b -sweep [-older-than 1h]   # kill orphaned tproxy sandboxes
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
	"github.com/tproxy/tproxy/transport/e2b"
	"github.com/tproxy/tproxy/transport/e2b/e2btest"
	"github.com/tproxy/tproxy/worker"
)

// workerEnv tells the copy of this binary in the sandbox to be the worker.
const workerEnv = "TPROXY_EXAMPLE_WORKER"

func main() {
	if os.Getenv(workerEnv) == "1" {
		worker.Main(demo.NewWorker())
	}
	dir := flag.String("dir", "", "session directory (default: a new directory under the system temp dir)")
	fake := flag.Bool("fake", false, "run against a local, wire-faithful E2B server instead of e2b.dev (no key needed)")
	sweep := flag.Bool("sweep", false, "kill tproxy sandboxes older than -older-than (orphans of crashed hosts) and exit")
	olderThan := flag.Duration("older-than", time.Hour, "with -sweep: minimum age of a sandbox to kill")
	template := flag.String("template", e2b.DefaultTemplate, "sandbox template")
	timeout := flag.Duration("timeout", e2b.DefaultTimeout, "sandbox timeout, refreshed while the session runs")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	tr := &e2b.E2B{
		Template: *template,
		Timeout:  *timeout,
		Env:      map[string]string{workerEnv: "1"},
		Stderr:   &prefixWriter{prefix: "   [worker stderr] "},
	}
	if *fake {
		srv, err := e2btest.New(e2btest.Options{})
		if err != nil {
			fail(err)
		}
		defer srv.Close()
		tr.APIKey, tr.APIURL, tr.EnvdURL = srv.APIKey(), srv.URL, srv.URL
		fmt.Printf("🧪 Local E2B server (package e2btest) at %s\n", srv.URL)
	} else if os.Getenv("E2B_API_KEY") == "" {
		fmt.Fprintln(os.Stderr, "❌ E2B_API_KEY is not set.")
		fmt.Fprintln(os.Stderr, "   This example needs an E2B API key (https://e2b.dev/dashboard → API keys), e.g.:")
		fmt.Fprintln(os.Stderr, "     E2B_API_KEY=e2b_... go run ./examples/e2b")
		fmt.Fprintln(os.Stderr, "   Optional: E2B_DOMAIN (default e2b.app), E2B_API_URL.")
		fmt.Fprintln(os.Stderr, "   Or run against the local E2B server: go run ./examples/e2b -fake")
		os.Exit(2)
	}

	var err error
	if *sweep {
		err = runSweep(ctx, tr, *olderThan)
	} else {
		err = run(ctx, tr, *fake, *dir)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "\n❌ %v\n", err)
	os.Exit(1)
}

func runSweep(ctx context.Context, tr *e2b.E2B, olderThan time.Duration) error {
	fmt.Printf("🧹 Killing tproxy sandboxes (tag %s=%s) older than %v...\n", e2b.TagKey, e2b.TagValue, olderThan)
	killed, err := tr.Sweep(ctx, e2b.ListOptions{OlderThan: olderThan})
	for _, id := range killed {
		fmt.Printf("   killed %s\n", id)
	}
	if err != nil {
		return err
	}
	fmt.Printf("✅ %d sandbox(es) killed\n", len(killed))
	return nil
}

func run(ctx context.Context, tr *e2b.E2B, fake bool, dir string) error {
	sessionID := "e2b_" + time.Now().UTC().Format("20060102T150405")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "tproxy-sessions", sessionID)
	}
	files, err := logsink.OpenDir(dir, sessionID)
	if err != nil {
		return err
	}
	defer files.Close()
	tr.Metadata = map[string]string{"session": sessionID}

	fmt.Println("🚀 Starting tproxy E2B transparent proxy")
	fmt.Println()
	fmt.Println("1️⃣ Starting worker in an E2B sandbox...")
	if fake {
		// The local server runs processes on this machine: this binary is the worker.
		if tr.Binary, err = os.Executable(); err != nil {
			return err
		}
	} else {
		t0 := time.Now()
		if tr.Binary, err = e2b.WorkerBinary(ctx); err != nil {
			return err
		}
		fmt.Printf("   worker binary: %s (%v)\n", tr.Binary, since(t0))
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tr.Logger = logger
	t0 := time.Now()
	c, err := host.Start(ctx, tr, host.WithSink(logsink.Multi(files, logsink.NewConsole(os.Stdout))), host.WithLogger(logger),
		// Creating a sandbox and uploading the worker over a slow uplink
		// may take longer than the default start timeout.
		host.WithStartTimeout(3*time.Minute))
	if err != nil {
		return err
	}
	defer c.Close()
	started := time.Since(t0)
	p := c.Process().(*e2b.Process)
	tm := p.Timings()
	info := c.Worker()
	upload := "uploaded"
	if !tm.Uploaded {
		upload = "already there (same sha256)"
	}
	fmt.Printf("✅ Worker started in sandbox %s: %s %s (protocol %d, pid %d), drivers: %s\n", p.SandboxID(),
		info.Worker.Name, info.Worker.Version, info.Protocol, p.Pid(), strings.Join(info.Worker.Drivers, ", "))
	fmt.Printf("   ⏱  sandbox start %v, worker %s %v, process start %v, first ping %v (total %v)\n\n",
		round(tm.Create), upload, round(tm.Upload), round(tm.Start), round(started-tm.Create-tm.Upload-tm.Start), round(started))

	fmt.Println("2️⃣ Sending commands:")
	fmt.Println()
	fmt.Println("→ Sending PING...")
	t0 = time.Now()
	pong, err := c.Ping(ctx, "test-123")
	if err != nil {
		return err
	}
	show(pong, since(t0))

	fmt.Println("→ Sending PREPARE...")
	m := demo.Manifest()
	t0 = time.Now()
	ready, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: sessionID, Manifest: m})
	if err != nil {
		return err
	}
	show(ready, since(t0))

	for _, st := range m.Steps {
		fmt.Printf("→ Sending EXEC_STEP for %s...\n", st.ID)
		t0 = time.Now()
		res, err := c.ExecStep(ctx, tproxy.ExecStepParams{StepID: st.ID, Driver: st.Driver, Config: st.Config, Inputs: st.Inputs})
		if err != nil {
			return err
		}
		show(res, since(t0))
	}

	fmt.Println("→ Sending CLEANUP...")
	t0 = time.Now()
	cleaned, err := c.Cleanup(ctx)
	if err != nil {
		return err
	}
	show(cleaned, since(t0))
	t0 = time.Now()
	if err := c.Close(); err != nil {
		return err
	}
	if err := files.Close(); err != nil {
		return err
	}
	fmt.Printf("   Worker exited: %v; sandbox %s killed (%v)\n\n", c.Process().Exit(), p.SandboxID(), since(t0))
	return summarize(dir)
}

func since(t time.Time) time.Duration { return round(time.Since(t)) }

func round(d time.Duration) time.Duration {
	if d > 10*time.Millisecond {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Microsecond)
}

// show prints a response the way the seed prototype did, with its round
// trip time.
func show(v any, d time.Duration) {
	b, _ := json.Marshal(v)
	fmt.Printf("   Response (%v): %s\n\n", d, b)
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
