package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
)

// millionEvents is the size of the large fixture, as the issue asks: a
// report of it must stay under maxReportBytes.
const (
	millionEvents  = 1_000_000
	maxReportBytes = 5 << 20
)

// big is the 1,000,000-event session, written once per test binary (it
// takes a few seconds and ~170 MB) and removed by TestMain.
var big struct {
	once sync.Once
	dir  string
	err  error
}

// millionSession returns the directory of the large fixture.
func millionSession(t testing.TB) string {
	t.Helper()
	big.once.Do(func() {
		big.dir, big.err = os.MkdirTemp("", "tproxy-million-")
		if big.err == nil {
			start := time.Now()
			big.err = writeMillionSession(filepath.Join(big.dir, "session"), millionEvents)
			t.Logf("wrote the %d-event session in %v", millionEvents, time.Since(start).Round(time.Millisecond))
		}
	})
	if big.err != nil {
		t.Fatal(big.err)
	}
	return filepath.Join(big.dir, "session")
}

func removeFixtures() {
	if big.dir != "" {
		os.RemoveAll(big.dir)
	}
}

// writeMillionSession writes a session of n events the way a host does,
// through logsink.Files and host.Status: four steps, of which the third
// fails and the fourth does not run; nearly all events are the drivers'
// "batch" events, with a metric every 100 of them. Timestamps are
// synthetic, 20µs apart, so the timeline is the same every time.
func writeMillionSession(dir string, n int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	const session = "run_million"
	files, err := logsink.OpenDir(dir, session)
	if err != nil {
		return err
	}
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := t0
	tick := func() time.Time { at = at.Add(20 * time.Microsecond); return at }
	var werr error
	event := func(src, name, step string, data map[string]any) {
		if werr == nil {
			werr = files.Event(ctx, tproxy.Event{Name: name, Source: src, StepID: step, Timestamp: tick(), Data: data})
		}
	}
	metric := func(name, step, unit string, v float64) {
		if werr == nil {
			werr = files.Metric(ctx, tproxy.Metric{Name: name, StepID: step, Unit: unit, Value: v, Timestamp: at})
		}
	}
	steps := []host.StepStatus{
		{ID: "ingest", Driver: "kafka_read"},
		{ID: "enrich", Driver: "geo_enrich"},
		{ID: "score", Driver: "risk_score"},
		{ID: "publish", Driver: "s3_write"},
	}
	event(tproxy.SourceHost, "run_start", "", map[string]any{"session_id": session, "steps_total": len(steps)})
	event(tproxy.SourceWorker, "session_initialized", "", map[string]any{"session_id": session})
	prepEnd := at
	event(tproxy.SourceHost, "phase_complete", "", map[string]any{"phase": "prepare", "duration_ms": 0})
	// The lifecycle events: 3 before the steps, 2 per step that runs, 4
	// after; the rest are batches, split over the three steps that run.
	batches := n - 3 - 2*3 - 4
	per := []int{batches / 2, batches / 3, batches - batches/2 - batches/3}
	for i, s := range steps[:3] {
		start := at
		event(tproxy.SourceWorker, "step_start", s.ID, map[string]any{"driver": s.Driver, "step_number": i + 1})
		for b := range per[i] {
			event(tproxy.SourceWorker, "batch", s.ID, map[string]any{"batch": b, "rows": 500, "lag_ms": (b * 7919) % 250})
			if b%100 == 0 {
				metric("rows_per_second", s.ID, "rows/s", float64(20000+(b*31)%5000))
				metric("lag_ms", s.ID, "ms", float64((b*7919)%250))
			}
		}
		steps[i].DurationMS = float64(at.Sub(start).Milliseconds())
		if i < 2 {
			steps[i].Status, steps[i].RowsProcessed = host.StepComplete, int64(per[i])*500
			event(tproxy.SourceWorker, "step_complete", s.ID, map[string]any{"driver": s.Driver, "rows_processed": steps[i].RowsProcessed, "duration_ms": steps[i].DurationMS})
			metric("rows_processed", s.ID, "", float64(steps[i].RowsProcessed))
			steps[i].Artifacts = []tproxy.Artifact{{Path: "cleaned_config.json", Size: 120 + int64(i), SHA256: fmt.Sprintf("%064x", i+1)}}
		} else {
			steps[i].Status, steps[i].ErrorType = host.StepFailed, "ScoringError"
			event(tproxy.SourceWorker, "step_failed", s.ID, map[string]any{"driver": s.Driver, "error_type": "ScoringError",
				"message": "model returned NaN for 3 rows", "duration_ms": steps[i].DurationMS})
		}
	}
	steps[3].Status = host.StepNotRun
	execEnd := at
	event(tproxy.SourceHost, "phase_complete", "", map[string]any{"phase": "execute", "duration_ms": execEnd.Sub(prepEnd).Milliseconds()})
	event(tproxy.SourceWorker, "session_cleanup", "", map[string]any{"session_id": session})
	event(tproxy.SourceHost, "phase_complete", "", map[string]any{"phase": "collect", "duration_ms": 1})
	reason := `tproxy/host: step "score" failed (ScoringError): model returned NaN for 3 rows`
	event(tproxy.SourceHost, "run_failed", "score", map[string]any{"outcome": "failed", "kind": host.FailureStep, "reason": reason})
	if werr != nil {
		return werr
	}
	if err := files.Close(); err != nil {
		return err
	}
	st := host.Status{
		SessionID: session, Dir: dir, Outcome: host.OutcomeFailed,
		Failure:    &host.Failure{Kind: host.FailureStep, StepID: "score", ErrorType: "ScoringError", Reason: reason},
		StepsTotal: len(steps), StepsCompleted: 2, Steps: steps,
		StartedAt: t0, FinishedAt: at, DurationMS: at.Sub(t0).Milliseconds(),
		Phases: host.Phases{PrepareMS: prepEnd.Sub(t0).Milliseconds(), ExecuteMS: execEnd.Sub(prepEnd).Milliseconds(),
			CollectMS: at.Sub(execEnd).Milliseconds()},
		Worker:     &tproxy.WorkerInfo{Name: "stream-worker", Version: "2.3.0"},
		StderrTail: "score: NaN at rows 1207, 1208, 1311\n",
		Artifacts:  host.ArtifactTotals{Files: 2, Bytes: 241},
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, host.StatusFile), b, 0o644)
}
