package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy/host"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/ from the current output")

// The fixtures under testdata/sessions are real sessions of
// examples/pipeline (see testdata/sessions/README.md for how they were
// made): one that succeeded, one whose transform step failed, and that
// failed one again with a logs.jsonl of WARN and ERROR records (the first
// two predate logs.jsonl, so they also stand for older sessions).
var fixtures = []string{"pipeline-ok", "pipeline-failed", "pipeline-logs"}

func TestShowGolden(t *testing.T) {
	for _, name := range fixtures {
		t.Run(name, func(t *testing.T) {
			r := runT(t, false, "show", filepath.Join("testdata", "sessions", name))
			if r.code != exitOK || r.stderr != "" {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			golden := filepath.Join("testdata", "show-"+name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(r.stdout), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), r.stdout); diff != "" {
				t.Errorf("show %s differs from %s (-want +got):\n%s", name, golden, diff)
			}
		})
	}
}

// TestShowLogs: show counts the records of logs.jsonl per level, read as
// the host reads a worker's (any case, slog offsets, anything else INFO),
// lists the last 20 WARN and ERROR records, oldest first, with their time
// from the session's start and their attrs, and says how many it left
// out and how many the cap dropped.
func TestShowLogs(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st, _ := json.Marshal(host.Status{SessionID: "s1", Outcome: host.OutcomeSuccess, StartedAt: start,
		FinishedAt: start.Add(3 * time.Second), DurationMS: 3000, LogsDropped: 7})
	writeFile(t, dir, host.StatusFile, string(st))
	var logs strings.Builder
	line := func(i int, level, source, step, msg string, attrs map[string]any) {
		m := map[string]any{"ts": start.Add(time.Duration(i) * 100 * time.Millisecond), "seq": i, "session": "s1",
			"level": level, "msg": msg}
		if source != "" {
			m["source"] = source
		}
		if step != "" {
			m["step_id"] = step
		}
		maps.Copy(m, attrs)
		b, _ := json.Marshal(m)
		logs.Write(append(b, '\n'))
	}
	// 25 WARN and ERROR records, in every spelling; between them records
	// of lower levels, and ones whose level is unknown (INFO).
	alerts := []string{"WARN", "warn", "Error", "ERROR+2", "WARN+1", "ERROR-4"} // ERROR-4 is WARN
	others := []string{"DEBUG", "info", "FATAL", "DEBUG+4", "debug-2"}          // DEBUG, INFO, INFO, INFO, DEBUG
	for i := 1; i <= 25; i++ {
		line(i, alerts[i%len(alerts)], "worker", "load", fmt.Sprintf("w%02d", i), map[string]any{"n": i})
		if i <= len(others) {
			line(i, others[i-1], "worker", "load", fmt.Sprintf("other%d", i), nil)
		}
	}
	line(26, "WARN", "", "", "bare", nil)
	// A last line still being written is left out.
	logs.WriteString(`{"ts":"2026-01-02T03:04:09Z","level":"ERR`)
	writeFile(t, dir, "logs.jsonl", logs.String())

	r := runT(t, false, "show", dir)
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	wantCounts := "\nlogs      31 records: 8 ERROR, 18 WARN, 3 INFO, 2 DEBUG; 7 dropped at the cap of logs.jsonl\n"
	if !strings.Contains(r.stdout, wantCounts) {
		t.Errorf("no line %q:\n%s", wantCounts, r.stdout)
	}
	var rows [][]string
	lines := strings.Split(r.stdout, "\n")
	i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "… ") })
	if i < 0 || lines[i] != "… 6 earlier WARN and ERROR records" {
		t.Fatalf("no line on the 6 records left out:\n%s", r.stdout)
	}
	if got := strings.Fields(lines[i+1]); !slices.Equal(got, []string{"TIME", "LEVEL", "SOURCE", "STEP", "MESSAGE"}) {
		t.Errorf("header %q", lines[i+1])
	}
	for _, l := range lines[i+2:] {
		if l == "" {
			break
		}
		rows = append(rows, strings.Fields(l))
	}
	if len(rows) != maxLogAlerts {
		t.Fatalf("%d records listed; want %d:\n%s", len(rows), maxLogAlerts, r.stdout)
	}
	// w07 is the first of the last 20 (w07..w25, then bare).
	if want := []string{"+700ms", "WARN", "worker", "load", "w07", "n=7"}; !slices.Equal(rows[0], want) {
		t.Errorf("first row %q; want %q", rows[0], want)
	}
	if want := []string{"+2.1s", "ERROR", "worker", "load", "w21", "n=21"}; !slices.Equal(rows[14], want) { // "ERROR+2"
		t.Errorf("row 15 %q; want %q", rows[14], want)
	}
	if want := []string{"+2.6s", "WARN", "-", "-", "bare"}; !slices.Equal(rows[19], want) {
		t.Errorf("last row %q; want %q", rows[19], want)
	}
	for _, gone := range []string{"w06", "other"} {
		if strings.Contains(r.stdout, gone) {
			t.Errorf("the output holds %q:\n%s", gone, r.stdout)
		}
	}

	// An empty logs.jsonl (a run that logged nothing) prints what a
	// session without one does: no logs line, no records.
	st, _ = json.Marshal(host.Status{SessionID: "s1", Outcome: host.OutcomeSuccess, StartedAt: start})
	writeFile(t, dir, host.StatusFile, string(st))
	writeFile(t, dir, "logs.jsonl", "")
	without := t.TempDir()
	writeFile(t, without, host.StatusFile, string(st))
	a, b := runT(t, false, "show", dir), runT(t, false, "show", without)
	if a.stdout != b.stdout || strings.Contains(a.stdout, "logs") {
		t.Errorf("with an empty logs.jsonl:\n%s\nwithout one:\n%s", a.stdout, b.stdout)
	}
}

func TestShowNotASession(t *testing.T) {
	r := runT(t, false, "show", t.TempDir())
	if r.code != exitFail || !strings.Contains(r.stderr, "is not a session directory") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// notifyBuffer is an output that says when it was written to, so that the
// follow test waits for output rather than for time.
type notifyBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func (n *notifyBuffer) Write(p []byte) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case n.wrote <- struct{}{}:
	default:
	}
	return n.b.Write(p)
}

func (n *notifyBuffer) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.b.String()
}

// waitFor waits until the output holds s.
func (n *notifyBuffer) waitFor(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for !strings.Contains(n.String(), s) {
		select {
		case <-n.wrote:
		case <-timeout:
			t.Fatalf("output never held %q:\n%s", s, n.String())
		}
	}
}

func TestShowFollow(t *testing.T) {
	old := pollEvery
	pollEvery = 5 * time.Millisecond
	t.Cleanup(func() { pollEvery = old })

	dir := filepath.Join(t.TempDir(), "live")
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	event := func(seq int, name, step string) string {
		b, _ := json.Marshal(map[string]any{"ts": ts.Add(time.Duration(seq) * time.Millisecond), "seq": seq,
			"session": "s1", "event": name, "source": "worker", "step_id": step, "n": seq})
		return string(b) + "\n"
	}
	status := func(outcome string) {
		st := host.Status{SessionID: "s1", Outcome: outcome, StepsTotal: 1,
			Steps: []host.StepStatus{{ID: "a", Driver: "d", Status: host.StepNotRun}}}
		if outcome == host.OutcomeSuccess {
			st.StepsCompleted, st.Steps[0].Status = 1, host.StepComplete
		}
		b, _ := json.Marshal(st)
		// As the host does: a new file renamed over the old.
		writeFile(t, dir, "status.json.tmp", string(b))
		if err := os.Rename(filepath.Join(dir, "status.json.tmp"), filepath.Join(dir, host.StatusFile)); err != nil {
			t.Fatal(err)
		}
	}

	out := &notifyBuffer{wrote: make(chan struct{}, 1)}
	done := make(chan int, 1)
	go func() {
		done <- runMain(context.Background(), []string{"show", "-f", dir}, &env{stdout: out, stderr: out})
	}()
	// The directory does not exist yet: show -f waits for it.
	var early strings.Builder
	for i := 1; i <= 12; i++ {
		early.WriteString(event(i, "tick", "a"))
	}
	writeFile(t, dir, "events.jsonl", early.String())
	status(host.OutcomeRunning)
	out.waitFor(t, "03:04:05.012  a            tick  n=12\n")
	if got := out.String(); !strings.HasPrefix(got, "… 2 earlier events\n03:04:05.003  a            tick  n=3\n") {
		t.Errorf("show -f does not begin with the last 10 events:\n%s", got)
	}

	// Half a line is not shown until it is whole.
	f, err := os.OpenFile(filepath.Join(dir, "events.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := event(13, "step_complete", "a")
	f.WriteString(line[:20])
	f.WriteString(line[20:])
	// The log records are in the summary at the end.
	writeFile(t, dir, "logs.jsonl", `{"ts":"2026-01-02T03:04:05.02Z","seq":14,"session":"s1","level":"WARN","source":"worker","step_id":"a","msg":"slow batch","ms":900}`+"\n")
	status(host.OutcomeSuccess)
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("show -f did not end when status.json said the run ended")
	}
	got := out.String()
	if strings.Count(got, "step_complete") != 1 || !strings.Contains(got, "03:04:05.013  a            step_complete  n=13\n") {
		t.Errorf("the last event is not shown once, whole:\n%s", got)
	}
	if !strings.Contains(got, "\nsession   s1\noutcome   success: 1/1 steps") {
		t.Errorf("no summary after the run ended:\n%s", got)
	}
	if !strings.Contains(got, "\nlogs      1 record: 1 WARN\n") || !strings.Contains(got, "\n03:04:05.020  WARN   worker  a     slow batch  ms=900\n") {
		t.Errorf("the summary does not hold the log records:\n%s", got)
	}
}
