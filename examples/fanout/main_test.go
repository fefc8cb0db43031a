package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		worker.Main(demo.NewWorker())
	}
	goleak.VerifyTestMain(wiretest.Main(m)) // a tap reporting after its test ended fails the run
}

// tapped is the example's worker transport with every frame of the host
// and the worker, both ways, validated against docs/schema.
func tapped(t *testing.T) transport.Transport {
	tr, err := workerTransport()
	if err != nil {
		t.Fatal(err)
	}
	return wiretest.Transport(t, tr, wiretest.Both)
}

// TestFanout: six pipelines two at a time, every third failing: the table
// has a row per session with its outcome, each session directory its
// status.json, and the progress line ends at 6/6.
func TestFanout(t *testing.T) {
	var out bytes.Buffer
	cfg := config{n: 6, parallelism: 2, rows: 200, failEvery: 3, dir: t.TempDir(), refresh: 10 * time.Millisecond}
	sum, err := run(t.Context(), cfg, tapped(t), &out)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Succeeded != 4 || sum.Failed != 2 {
		t.Errorf("%d succeeded, %d failed; want 4 and 2", sum.Succeeded, sum.Failed)
	}
	text := out.String()
	for _, want := range []string{"6/6 done", "fanout_003  failed", "fanout_006  failed", "fanout_001  success", "4 succeeded, 2 failed, 0 cancelled"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	for _, r := range sum.Results {
		if _, err := os.Stat(filepath.Join(cfg.dir, r.SessionID, host.StatusFile)); err != nil {
			t.Errorf("session %s: %v", r.SessionID, err)
		}
	}
}

// TestFanoutStopOnFailure: the first failure cancels the sessions not yet
// done; all of them are in the table.
func TestFanoutStopOnFailure(t *testing.T) {
	var out bytes.Buffer
	cfg := config{n: 8, parallelism: 1, rows: 200, failEvery: 2, stopOnFailure: true, dir: t.TempDir(), refresh: 10 * time.Millisecond}
	sum, err := run(context.Background(), cfg, tapped(t), &out)
	if err != nil {
		t.Fatal(err)
	}
	// One at a time: session 1 succeeds, session 2 fails, 3..8 are cancelled.
	if sum.Succeeded != 1 || sum.Failed != 1 || sum.Cancelled != 6 {
		t.Errorf("%d succeeded, %d failed, %d cancelled; want 1, 1, 6\n%s", sum.Succeeded, sum.Failed, sum.Cancelled, out.String())
	}
	if !strings.Contains(out.String(), "fanout_008  cancelled") {
		t.Errorf("output:\n%s", out.String())
	}
}
