package host_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	osexec "os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
)

// The ladder's waits in the close tests: long enough that a Close which
// waited for them could not pass for one that did not.
const (
	longCloseTimeout = 30 * time.Second
	longTermTimeout  = 30 * time.Second
	// closeBound is how soon Close must return once the worker can exit:
	// generous for a noisy machine, well under longCloseTimeout.
	closeBound = 10 * time.Second
)

// violation is the line the flooding workers answer prepare with, and
// then repeat for as long as they can write.
const violation = "Segmentation fault (core dumped)\n"

// floodingSubprocess is a worker process that answers the handshake, then
// answers the next request with a line that is not JSON and repeats it
// forever: once the host stops reading, it is blocked writing, deaf to
// its stdin closing, until a write fails.
func floodingSubprocess() *transport.Subprocess {
	const script = `id() { sed -n 's/.*"id":\([0-9][0-9]*\).*/\1/p'; }
read -r l; i=$(printf '%s' "$l" | id)
printf '{"jsonrpc":"2.0","id":%s,"result":{"status":"pong","echo":"handshake","timestamp":"2025-01-01T00:00:00Z","protocol":1,"worker":{"name":"flood","version":"1","drivers":["d"]}}}\n' "$i"
read -r l
exec yes 'Segmentation fault (core dumped)'`
	s := transport.Command("sh", "-c", script)
	s.CloseTimeout, s.TermTimeout = longCloseTimeout, longTermTimeout
	return s
}

// floodingInMemory is floodingSubprocess in memory. It ignores its
// context: only a failed write ends it.
func floodingInMemory() *transport.InMemory {
	// The fake's frames are wrong on purpose; the host's are validated.
	return &transport.InMemory{CloseTimeout: longCloseTimeout, TermTimeout: longTermTimeout,
		Serve: wiretest.Serve(nil, func(_ context.Context, rw io.ReadWriteCloser) error {
			sc := bufio.NewScanner(rw)
			if !sc.Scan() {
				return sc.Err()
			}
			var ping struct {
				ID json.RawMessage `json:"id"`
			}
			json.Unmarshal(sc.Bytes(), &ping)
			io.WriteString(rw, pong(tproxy.ProtocolVersion)(string(ping.ID))+"\n")
			if !sc.Scan() {
				return sc.Err()
			}
			for {
				if _, err := io.WriteString(rw, violation); err != nil {
					return err
				}
			}
		}, wiretest.HostFrames)}
}

// TestCloseEndsAWorkerBlockedWriting: after a protocol violation the host
// reads no more, and a worker that keeps writing blocks on its stdout.
// Close stops reading the worker's stdout before anything else, so the
// worker's write fails (EPIPE, a closed pipe in memory) and it exits, and
// Close returns then: not after CloseTimeout, let alone after the
// ladder's SIGTERM or SIGKILL.
func TestCloseEndsAWorkerBlockedWriting(t *testing.T) {
	tests := []struct {
		name string
		tr   func(t *testing.T) transport.Transport
	}{
		{"subprocess", func(t *testing.T) transport.Transport {
			if _, err := osexec.LookPath("sh"); err != nil {
				t.Skip("no sh:", err)
			}
			// The fake's frames are wrong on purpose; the host's are validated.
			return wiretest.Transport(t, floodingSubprocess(), wiretest.HostFrames)
		}},
		{"in-memory", func(*testing.T) transport.Transport { return floodingInMemory() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := host.Start(t.Context(), tt.tr(t), quiet()...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close() // idempotent; for the paths that fail before Close

			_, err = c.Prepare(t.Context(), tproxy.PrepareParams{SessionID: "s1"})
			var pe *host.ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("prepare = %v, want a *host.ProtocolError", err)
			}
			select {
			case <-c.Done():
			case <-time.After(closeBound): // a hang guard
				t.Fatal("the connection is still open after the protocol violation")
			}
			select {
			case <-c.Process().Done():
				t.Fatal("the worker exited before Close: nothing left to test")
			case <-time.After(50 * time.Millisecond): // blocked writing by now
			}

			closing := time.Now()
			closed := make(chan error, 1)
			go func() { closed <- c.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Errorf("Close = %v", err)
				}
			case <-time.After(closeBound):
				if k, ok := c.Process().(transport.Killer); ok {
					k.Kill() // lets Close return, leaving nothing behind
					<-closed
				}
				t.Fatalf("Close still running %v in (CloseTimeout %v): the worker blocked writing to its stdout was not let go", closeBound, longCloseTimeout)
			}
			t.Logf("Close returned %v after it was called", time.Since(closing))
			if st := c.Process().Exit(); st.Signal == syscall.SIGTERM || st.Signal == syscall.SIGKILL {
				t.Errorf("exit %v: the ladder's signals ended the worker, not its failed write", st)
			}
		})
	}
}
