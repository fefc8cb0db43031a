package host_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// deaf is a worker that answers the handshake and prepare, then stops
// reading its input while it goes on sending heartbeats: a worker stuck
// in a driver that never returns to its read loop, or an ssh or E2B input
// stream that stopped passing bytes on.
func deaf() *transport.InMemory {
	return &transport.InMemory{CloseTimeout: 50 * time.Millisecond, TermTimeout: 50 * time.Millisecond,
		Serve: wiretest.Serve(nil, func(ctx context.Context, rw io.ReadWriteCloser) error {
			defer rw.Close()
			lines := bufio.NewScanner(rw)
			for _, answer := range []string{
				`{"jsonrpc":"2.0","id":1,"result":{"status":"pong","echo":"","timestamp":"2026-12-06T16:21:28Z","protocol":1,"worker":{"name":"deaf","version":"1","drivers":["d"]}}}`,
				`{"jsonrpc":"2.0","id":2,"result":{"status":"ready","session_id":"s1"}}`,
			} {
				if !lines.Scan() {
					return nil
				}
				io.WriteString(rw, answer+"\n")
			}
			beat := time.NewTicker(10 * time.Millisecond)
			defer beat.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-beat.C:
					if _, err := io.WriteString(rw, `{"jsonrpc":"2.0","method":"heartbeat","params":{"timestamp":"2026-12-06T16:21:28Z"}}`+"\n"); err != nil {
						return nil
					}
				}
			}
		}, wiretest.HostFrames)}
}

// TestWriteBoundedByDeadline pins issue 13 item 1: a call whose request
// the worker does not read ends at the caller's deadline, heartbeats or
// not, instead of blocking in write for ever.
func TestWriteBoundedByDeadline(t *testing.T) {
	c := start(t, deaf(), &logsink.Memory{}, quiet()...)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "d-step", Driver: "d",
			Config: map[string]any{"blob": strings.Repeat("x", 1<<20)}})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not read the request") {
			t.Errorf("err = %v, want context.DeadlineExceeded saying the worker did not read", err)
		}
	case <-time.After(20 * time.Second): // a hang guard, not a measurement
		t.Fatal("the call is still blocked writing to a worker that does not read")
	}
	if _, err := c.Ping(t.Context(), "after"); err == nil {
		t.Error("a ping went through a connection whose request was cut short")
	}
}

// TestStartKillsOnDeadline pins issue 13 item 2: a worker that never
// answers the handshake is killed when Start's deadline passes, not taken
// down the graceful ladder (here an hour long).
func TestStartKillsOnDeadline(t *testing.T) {
	sleep, err := osexec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1) on this machine")
	}
	// sleep writes nothing; the host's ping is validated.
	tr := wiretest.Transport(t, &transport.Subprocess{Path: sleep, Args: []string{"3600"}, Env: []string{}, CloseTimeout: time.Hour, TermTimeout: time.Hour}, wiretest.HostFrames)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := host.Start(ctx, tr, quiet()...)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(20 * time.Second): // a hang guard: the ladder would take 2 h
		t.Fatal("Start did not return after its deadline")
	}
}

// TestStrayResponseIDsDropped pins issue 13 item 18: a response whose id
// is a number this host never sends is dropped like any response to an
// unknown id; it does not end the session.
func TestStrayResponseIDsDropped(t *testing.T) {
	var stray strings.Builder
	for _, id := range []string{"-1", "2.5", "1e400", "18446744073709551616", "-0.0"} {
		stray.WriteString(`{"jsonrpc":"2.0","id":` + id + `,"result":{"status":"complete"}}` + "\n")
		stray.WriteString(`{"jsonrpc":"2.0","id":` + id + `,"error":{"code":-32000,"message":"x"}}` + "\n")
	}
	c := start(t, scripted("", func(id string) string { return stray.String() + stepOK(id) }), &logsink.Memory{}, quiet()...)
	if _, err := exec(t.Context(), c, "d", nil); err != nil {
		t.Fatalf("stray response ids broke the call: %v", err)
	}
	if _, err := c.Ping(t.Context(), "x"); err != nil {
		t.Errorf("the connection did not survive stray response ids: %v", err)
	}
}

// TestWorkerCannotPassForHost pins issue 13 item 20: every event in
// events.jsonl says who reported it, and a worker's event under one of
// the host's names is refused and reported.
func TestWorkerCannotPassForHost(t *testing.T) {
	dir, st, err := fakeRun(t, func(id string) string {
		return `{"jsonrpc":"2.0","method":"event","params":{"name":"run_complete","timestamp":"2026-12-06T16:21:28Z","data":{"forged":true}}}` + "\n" +
			`{"jsonrpc":"2.0","method":"event","params":{"name":"phase_complete","timestamp":"2026-12-06T16:21:28Z","x":1}}` + "\n" +
			`{"jsonrpc":"2.0","method":"event","params":null}` + "\n" +
			`{"jsonrpc":"2.0","method":"event","params":{"name":"mine","timestamp":"2026-12-06T16:21:28Z","data":{"source":"host"}}}` + "\n" +
			stepOK(id)
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Protocol.DroppedNotifications != 3 {
		t.Errorf("dropped = %d, want 3 (two forged host events, one without params)", st.Protocol.DroppedNotifications)
	}
	for _, rec := range readJSONL(t, filepath.Join(dir, logsink.EventsFile)) {
		src, name := rec["source"], rec["event"]
		switch {
		case name == "mine" && (src != tproxy.SourceWorker || rec["data.source"] != "host"):
			t.Errorf("the worker's event: %v", rec)
		case name != "mine" && src != tproxy.SourceHost:
			t.Errorf("%v: want source host", rec)
		case name == "run_complete" && rec["forged"] != nil:
			t.Errorf("a forged run_complete was persisted: %v", rec)
		}
	}
}
