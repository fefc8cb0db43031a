package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
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
// made): one that succeeded, one whose transform step failed.
var fixtures = []string{"pipeline-ok", "pipeline-failed"}

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
}
