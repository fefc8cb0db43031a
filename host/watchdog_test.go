package host_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
)

// silent answers exec_step with nothing: the worker goes silent mid-call.
func silent(string) string { return "" }

// TestWatchdogAfterIdleSpell: the silence check sleeps with the client (an
// idle worker owes no heartbeat, so a call after an idle spell longer than
// the timeout is not failed for it) and wakes with the next call: a worker
// that then goes silent is cut off once the timeout passes, the call
// failing with host.ErrClosed and a *host.SilenceError.
func TestWatchdogAfterIdleSpell(t *testing.T) {
	const timeout = 250 * time.Millisecond
	c, err := host.Start(t.Context(), scripted("", silent), append(quiet(), host.WithHeartbeatTimeout(timeout))...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 2 {
		if _, err := c.Ping(t.Context(), "x"); err != nil {
			t.Fatalf("ping after an idle spell: %v", err)
		}
		time.Sleep(2 * timeout) // idle for longer than the timeout
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // a hang guard
	defer cancel()
	_, err = c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "s", Driver: "d"})
	var se *host.SilenceError
	if !errors.As(err, &se) || !errors.Is(err, host.ErrClosed) {
		t.Fatalf("err = %v, want host.ErrClosed with a *host.SilenceError", err)
	}
	if se.Timeout != timeout || se.Silence < timeout {
		t.Errorf("silence %+v", se)
	}
	select {
	case <-c.Done():
	default:
		t.Error("the connection to the silent worker is still open")
	}
}

// TestWatchdogDisabled: with the heartbeat timeout off, a silent call
// waits for its context, and the client stays usable.
func TestWatchdogDisabled(t *testing.T) {
	c, err := host.Start(t.Context(), scripted("", silent), append(quiet(), host.WithHeartbeatTimeout(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "s", Driver: "d"})
	var se *host.SilenceError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &se) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if _, err := c.Ping(t.Context(), "x"); err != nil {
		t.Fatalf("ping after the cancelled call: %v", err)
	}
}
