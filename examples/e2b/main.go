// Command e2b runs the tproxy story of examples/local with the worker in an
// E2B sandbox: the host creates a sandbox, uploads the worker (this same
// program, as a static linux/amd64 binary), starts it through E2B's
// process service, drives the same three-step session over JSON-RPC,
// prints every response, event and metric as it streams plus the
// sandbox id and timings, writes the session's logs, and kills the
// sandbox.
//
//	E2B_API_KEY=e2b_… go run ./examples/e2b [-dir DIR] [-template base] [-timeout 5m]
//	go run ./examples/e2b -fake     # against the local, wire-faithful E2B (package e2bfake)
//	E2B_API_KEY=e2b_… go run ./examples/e2b -sweep [-older-than 1h]   # kill orphaned tproxy sandboxes
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/internal/story"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport/e2b"
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
		Stderr:   &story.PrefixWriter{Prefix: "   [worker stderr] "},
	}
	if *fake {
		srv, err := e2bfake.New(e2bfake.Options{})
		if err != nil {
			fail(err)
		}
		defer srv.Close()
		tr.APIKey, tr.APIURL, tr.EnvdURL = srv.APIKey(), srv.URL, srv.URL
		fmt.Printf("🧪 Local E2B server (package e2bfake) at %s\n", srv.URL)
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
	sessionID := "e2b_" + time.Now().UTC().Format("20060102T150405.000000")
	tr.Metadata = map[string]string{"session": sessionID}

	fmt.Println("🚀 Starting tproxy E2B transparent proxy")
	fmt.Println()
	fmt.Println("1️⃣ Starting worker in an E2B sandbox...")
	var err error
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
		fmt.Printf("   worker binary: %s (%v)\n", tr.Binary, story.Round(time.Since(t0)))
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tr.Logger = logger
	teller := &story.Teller{Timed: true}
	r := host.NewRun(tr, host.RunSpec{
		SessionID: sessionID,
		Dir:       dir,
		Manifest:  demo.Manifest(),
		Sink:      logsink.NewConsole(os.Stdout),
		Options: []host.Option{host.WithLogger(logger), host.WithTrace(teller.Trace),
			// Creating a sandbox and uploading the worker over a slow
			// uplink may take longer than the default start timeout.
			host.WithStartTimeout(3 * time.Minute)},
	})
	t0 := time.Now()
	if err := r.Prepare(ctx); err == nil {
		prepared := time.Since(t0)
		tm, _ := e2b.InfoOf(r.Client().Process())
		info := r.Client().Worker()
		upload := map[string]string{"uploaded": "uploaded", "found": "already there (same sha256)", "template": "in the template"}[tm.Worker]
		fmt.Printf("✅ Worker started in sandbox %s (envd %s): %s %s (protocol %d, pid %d), drivers: %s\n", tm.SandboxID, tm.EnvdVersion,
			info.Worker.Name, info.Worker.Version, info.Protocol, tm.Pid, strings.Join(info.Worker.Drivers, ", "))
		fmt.Printf("   ⏱  sandbox start %v, worker %s %v, process start %v, handshake and prepare %v (total %v)\n\n",
			story.Round(tm.Create), upload, story.Round(tm.Upload), story.Round(tm.Start),
			story.Round(prepared-tm.Create-tm.Upload-tm.Start), story.Round(prepared))
		fmt.Println("2️⃣ Sending commands:")
		fmt.Println()
		r.Execute(ctx)
	}
	t0 = time.Now()
	st, err := r.Collect(ctx)
	if st.Exit != nil {
		fmt.Printf("   Worker exited: %v; sandbox killed (%v)\n", st.Exit, story.Round(time.Since(t0)))
		if c := r.Client(); c != nil {
			if tm, ok := e2b.InfoOf(c.Process()); ok {
				fmt.Printf("   💰 %.1f sandbox-seconds, %d bytes uploaded\n", tm.SandboxSeconds, tm.BytesUploaded)
			}
		}
		fmt.Println()
	}
	if err != nil {
		return err
	}
	return teller.Summarize(st)
}
