//go:build unix

package e2b_test

import (
	"errors"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/transport"
)

// TestHungWorkerKilled: a worker that stops (SIGSTOP) inside the sandbox
// beats no more; the host's heartbeat timeout kills it through envd and
// fails the call with a *host.SilenceError, as for a subprocess.
func TestHungWorkerKilled(t *testing.T) {
	srv := newServer(t, fakeOptions())
	sink := newSignalSink("blocked")
	c, err := host.Start(t.Context(), tapped(t, newE2B(t, srv, "worker")), host.WithSink(sink),
		host.WithHeartbeatTimeout(500*time.Millisecond), host.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Prepare(t.Context(), tproxy.PrepareParams{SessionID: "s1"}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.ExecStep(t.Context(), tproxy.ExecStepParams{StepID: "b", Driver: "block"})
		errc <- err
	}()
	<-sink.seen
	p := sandboxOf(t, c)
	if err := srv.Signal(p.SandboxID, p.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	err = stepErr(t, errc)
	var se *host.SilenceError
	var ee *transport.ExitError
	if !errors.As(err, &se) || !errors.As(err, &ee) || ee.Status.Signal != syscall.SIGKILL {
		t.Fatalf("err = %v, want a *host.SilenceError with the SIGKILL exit", err)
	}
}
