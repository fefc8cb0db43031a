package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// fanoutWorker is subprocess(nil) with the worker's default heartbeat
// interval: a hundred workers beating every 20 ms would measure the
// heartbeats.
func fanoutWorker() tappedSubprocess {
	tr := subprocess(nil)
	tr.Env = append(tr.Env, realBeatEnv+"=1")
	return tr
}

// readStatus reads dir/status.json.
func readStatus(t *testing.T, dir string) *host.Status {
	t.Helper()
	var st host.Status
	b, err := os.ReadFile(filepath.Join(dir, host.StatusFile))
	if err != nil {
		t.Fatalf("no status.json: %v", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("status.json: %v", err)
	}
	return &st
}

// TestRunManyHundredSessions is the fan-out's acceptance test: 100
// sessions at once over worker subprocesses complete, each in its own
// session directory holding its own events and artifacts, and nothing
// leaks.
func TestRunManyHundredSessions(t *testing.T) {
	const n, events = 100, 20
	base := t.TempDir()
	before := count(t)

	jobs := make([]host.Job, n)
	tr := fanoutWorker() // one Transport, a worker per session
	for i := range jobs {
		jobs[i] = host.Job{Transport: tr, Spec: host.RunSpec{
			SessionID: fmt.Sprintf("s%03d", i),
			Dir:       filepath.Join(base, fmt.Sprintf("s%03d", i)),
			Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{
				{ID: "emit", Driver: "emit", Config: map[string]any{"events": events + i%3}},
				{ID: "mark", Driver: "files", Needs: []string{"emit"}, Config: map[string]any{"files": map[string]any{"who.txt": fmt.Sprint(i)}}},
			}},
			Options: quiet(),
		}}
	}
	var mu sync.Mutex
	var snaps []host.Progress
	m := &host.Many{Parallelism: n, OnProgress: func(p host.Progress) {
		mu.Lock()
		snaps = append(snaps, p)
		mu.Unlock()
	}}
	sum, err := m.Run(t.Context(), jobs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sessions, %d at once: %v, %d events (%.0f/s), %d metrics", n, n, sum.Wall, sum.Events, sum.EventsPerSecond(), sum.Metrics)
	if sum.Succeeded != n || sum.Failed != 0 || sum.Cancelled != 0 || len(sum.Results) != n {
		t.Fatalf("summary: %d succeeded, %d failed, %d cancelled, %d results", sum.Succeeded, sum.Failed, sum.Cancelled, len(sum.Results))
	}
	var wantEvents int64
	for i, r := range sum.Results {
		dir := filepath.Join(base, fmt.Sprintf("s%03d", i))
		if r.Dir != dir || r.SessionID != fmt.Sprintf("s%03d", i) || r.Err != nil {
			t.Fatalf("result %d: %+v", i, r)
		}
		st := readStatus(t, dir)
		if st.SessionID != r.SessionID || st.Outcome != host.OutcomeSuccess || st.Exit == nil || !st.Exit.Success() {
			t.Errorf("session %d: status.json %+v", i, st)
		}
		if b, err := os.ReadFile(filepath.Join(dir, host.ArtifactsDir, "mark", "who.txt")); err != nil || string(b) != fmt.Sprint(i) {
			t.Errorf("session %d: its artifact is %q, %v", i, b, err)
		}
		lines, err := logsink.ReadLines(filepath.Join(dir, logsink.EventsFile))
		if err != nil {
			t.Fatal(err)
		}
		ticks := 0
		for _, l := range lines {
			if l["session"] != r.SessionID {
				t.Fatalf("session %d: events.jsonl holds an event of session %v", i, l["session"])
			}
			if l["event"] == "tick" {
				ticks++
			}
		}
		if ticks != events+i%3 {
			t.Errorf("session %d: %d tick events, want %d", i, ticks, events+i%3)
		}
		wantEvents += int64(len(lines))
	}
	if sum.Events != wantEvents {
		t.Errorf("summary counts %d events, the session directories hold %d", sum.Events, wantEvents)
	}

	mu.Lock()
	defer mu.Unlock()
	if want := 2*n + 2*n; len(snaps) != want { // the sessions' starts and ends, and their two steps' ends
		t.Errorf("%d progress calls, want one per start and end of a session and per end of a step: %d", len(snaps), want)
	}
	if last := snaps[len(snaps)-1]; last.StepsTotal != 2*n || last.StepsEnded != 2*n {
		t.Errorf("last snapshot: %d of %d steps ended, want all %d", last.StepsEnded, last.StepsTotal, 2*n)
	}
	maxRunning := 0
	for i, p := range snaps {
		if p.Waiting+p.Running+p.Done() != n || p.Running > n {
			t.Fatalf("snapshot %d does not add up: %+v", i, p)
		}
		if i > 0 && p.Done() < snaps[i-1].Done() {
			t.Fatalf("snapshot %d: done went back from %d to %d", i, snaps[i-1].Done(), p.Done())
		}
		maxRunning = max(maxRunning, p.Running)
	}
	if last := snaps[len(snaps)-1]; last.Succeeded != n || last.Running != 0 {
		t.Errorf("last snapshot %+v", last)
	}
	t.Logf("at most %d sessions running at once", maxRunning)

	if after := settled(t, before); after.exceeds(before) {
		t.Errorf("after the fan-out: %+v, before: %+v", after, before)
	}
}

// blockedSink counts "blocked" events across sessions and closes all once
// want have arrived.
type blockedSink struct {
	n    atomic.Int32
	want int32
	all  chan struct{}
}

func (s *blockedSink) Event(_ context.Context, e tproxy.Event) error {
	if e.Name == "blocked" && s.n.Add(1) == s.want {
		close(s.all)
	}
	return nil
}
func (s *blockedSink) Metric(context.Context, tproxy.Metric) error { return nil }
func (s *blockedSink) Log(context.Context, tproxy.LogRecord) error { return nil }
func (s *blockedSink) Flush() error                                { return nil }

// exitClock is a Transport that notes when the last of its workers ended.
type exitClock struct {
	transport.Transport
	mu   sync.Mutex
	last time.Time
	wg   sync.WaitGroup
}

func (c *exitClock) Start(ctx context.Context) (transport.Process, error) {
	p, err := c.Transport.Start(ctx)
	if err == nil {
		c.wg.Go(func() {
			<-p.Done()
			c.mu.Lock()
			c.last = time.Now()
			c.mu.Unlock()
		})
	}
	return p, err
}

// TestRunManyCancelStopsAll: cancelling the parent context while 100
// sessions are in a step that waits for cancellation stops every worker
// (the time is logged; the bound only guards against hangs); the 10 jobs
// that never got a slot are cancelled without a worker; all 110 have a
// status.json saying cancelled.
func TestRunManyCancelStopsAll(t *testing.T) {
	const running, waiting = 100, 10
	base := t.TempDir()
	before := count(t)
	sink := &blockedSink{want: running, all: make(chan struct{})}
	clock := &exitClock{Transport: fanoutWorker()}
	jobs := make([]host.Job, running+waiting)
	for i := range jobs {
		jobs[i] = host.Job{Transport: clock, Spec: host.RunSpec{
			Dir:      filepath.Join(base, fmt.Sprint(i)),
			Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "wait", Driver: "block"}, {ID: "never", Driver: "emit", Needs: []string{"wait"}}}},
			Sink:     sink,
			Options:  quiet(),
		}}
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type ret struct {
		sum *host.Summary
		err error
		at  time.Time
	}
	done := make(chan ret, 1)
	go func() {
		sum, err := host.RunMany(ctx, jobs, running)
		done <- ret{sum, err, time.Now()}
	}()
	select {
	case <-sink.all:
	case <-time.After(2 * time.Minute):
		t.Fatalf("only %d of %d sessions reached their blocking step", sink.n.Load(), running)
	}
	cancelled := time.Now()
	cancel()
	var r ret
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("RunMany still running a minute after the cancel")
	}
	clock.wg.Wait()
	t.Logf("cancel → the last worker exited: %v; RunMany returned, every status.json written: %v", clock.last.Sub(cancelled), r.at.Sub(cancelled))

	var me *host.ManyError
	if !errors.As(r.err, &me) || !errors.Is(r.err, context.Canceled) || me.Cancelled != running+waiting {
		t.Fatalf("err = %v, want a *host.ManyError of %d cancelled sessions", r.err, running+waiting)
	}
	started := 0
	var slowest time.Duration
	for i, res := range r.sum.Results {
		st := readStatus(t, filepath.Join(base, fmt.Sprint(i)))
		slowest = max(slowest, st.FinishedAt.Sub(cancelled))
		if st.Outcome != host.OutcomeCancelled || st.Failure == nil || st.Failure.Kind != host.FailureCancelled {
			t.Errorf("session %d: outcome %s, failure %+v", i, st.Outcome, st.Failure)
		}
		if st.Exit != nil {
			started++
			if st.Steps[0].Status != host.StepCancelled && st.Steps[0].Status != host.StepNotRun {
				t.Errorf("session %d: step wait %s", i, st.Steps[0].Status)
			}
		}
		if res.Status.Outcome != st.Outcome {
			t.Errorf("session %d: result %s, status.json %s", i, res.Status.Outcome, st.Outcome)
		}
	}
	t.Logf("the last session finished %v after the cancel", slowest)
	if started != running {
		t.Errorf("%d sessions had a worker, want %d (the other %d never got a slot)", started, running, waiting)
	}
	if after := settled(t, before); after.exceeds(before) {
		t.Errorf("after the cancelled fan-out: %+v, before: %+v", after, before)
	}
}

// TestRunManyStopOnFailure: once a session fails, the others are
// cancelled, running or waiting, with ErrSessionFailed as the cause.
func TestRunManyStopOnFailure(t *testing.T) {
	base := t.TempDir()
	mk := func(i int, driver string) host.Job {
		return host.Job{Transport: inMemory(), Spec: host.RunSpec{
			Dir:      filepath.Join(base, fmt.Sprint(i)),
			Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: driver, Config: map[string]any{"ms": 60_000}}}},
			Options:  quiet(),
		}}
	}
	jobs := []host.Job{mk(0, "sleep"), mk(1, "fail"), mk(2, "sleep"), mk(3, "sleep")}
	m := &host.Many{Parallelism: 2, StopOnFailure: true}
	start := time.Now()
	var again error
	var once sync.Once
	m.OnProgress = func(host.Progress) {
		once.Do(func() { _, again = m.Run(t.Context(), nil) })
	}
	sum, err := m.Run(t.Context(), jobs)
	t.Logf("stopped after %v", time.Since(start))
	if !errors.Is(again, host.ErrManyRunning) {
		t.Errorf("Run during Run = %v, want ErrManyRunning", again)
	}
	var se *host.StepError
	if !errors.As(err, &se) || se.StepID != "s" {
		t.Fatalf("err = %v, want one holding the failed step's *host.StepError", err)
	}
	want := []string{host.OutcomeCancelled, host.OutcomeFailed, host.OutcomeCancelled, host.OutcomeCancelled}
	for i, r := range sum.Results {
		if r.Status.Outcome != want[i] {
			t.Errorf("job %d: outcome %s, want %s (%v)", i, r.Status.Outcome, want[i], r.Err)
		}
		if readStatus(t, r.Dir).Outcome != want[i] {
			t.Errorf("job %d: status.json disagrees", i)
		}
	}
	if sum.Failed != 1 || sum.Cancelled != 3 || sum.Succeeded != 0 {
		t.Errorf("summary %d/%d/%d", sum.Succeeded, sum.Failed, sum.Cancelled)
	}
}

// TestRunManyWithoutStop: a failure does not stop the others by default.
func TestRunManyWithoutStop(t *testing.T) {
	base := t.TempDir()
	var jobs []host.Job
	for i, d := range []string{"emit", "fail", "emit"} {
		jobs = append(jobs, host.Job{Transport: inMemory(), Spec: host.RunSpec{
			Dir:      filepath.Join(base, fmt.Sprint(i)),
			Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: d, Config: map[string]any{"events": 3}}}},
			Options:  quiet(),
		}})
	}
	sum, err := host.RunMany(t.Context(), jobs, 1)
	var me *host.ManyError
	if !errors.As(err, &me) || me.Failed != 1 || len(me.Errs) != 1 || !strings.Contains(err.Error(), "1 of 3 sessions failed") {
		t.Fatalf("err = %v", err)
	}
	if sum.Succeeded != 2 || sum.Results[0].Err != nil || sum.Results[2].Err != nil {
		t.Errorf("summary %+v", sum)
	}
}

// TestRunManyRefusesSharedDirs: two jobs with one session directory are
// refused before anything runs; generated ids never collide.
func TestRunManyRefusesSharedDirs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "same")
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: "emit"}}}
	jobs := []host.Job{{Transport: inMemory(), Spec: host.RunSpec{Dir: dir, Manifest: m}}, {Transport: inMemory(), Spec: host.RunSpec{Dir: dir + "/", Manifest: m}}}
	if _, err := host.RunMany(t.Context(), jobs, 2); err == nil || !strings.Contains(err.Error(), "share the session directory") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("a session ran: %v", err)
	}

	t.Setenv("TMPDIR", t.TempDir())
	jobs = make([]host.Job, 100)
	for i := range jobs {
		jobs[i] = host.Job{Transport: inMemory(), Spec: host.RunSpec{Manifest: m, Options: quiet()}}
	}
	sum, err := host.RunMany(t.Context(), jobs, 8)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range sum.Results {
		if seen[r.Dir] || r.Dir == "" {
			t.Fatalf("directory %q used twice", r.Dir)
		}
		seen[r.Dir] = true
		readStatus(t, r.Dir)
	}
}
