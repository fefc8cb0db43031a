package e2b_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/transport"
)

// BenchmarkRoundTrip measures the per-call overhead of the E2B transport
// (over the local E2B on loopback: Connect envelopes, JSON+base64, one
// StreamInput request body, the Start output stream) against a local
// subprocess, in the same run: a ping, and an exec_step of a driver that
// does nothing (step_start/step_complete events, metrics, the result).
//
//	go test -run '^$' -bench RoundTrip ./transport/e2b
func BenchmarkRoundTrip(b *testing.B) {
	srv := newServer(b, e2bfake.Options{KeepaliveInterval: 50 * time.Second})
	transports := []struct {
		name string
		tr   func() transport.Transport
	}{
		{"subprocess", func() transport.Transport { return subprocess(b, "worker") }},
		{"e2b", func() transport.Transport { return newE2B(b, srv, "worker") }},
	}
	for _, call := range []string{"ping", "exec_step"} {
		for _, tt := range transports {
			b.Run(call+"/"+tt.name, func(b *testing.B) {
				ctx := context.Background()
				c, err := host.Start(ctx, tt.tr())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "bench"}); err != nil {
					b.Fatal(err)
				}
				i := 0
				for b.Loop() {
					i++
					switch call {
					case "ping":
						_, err = c.Ping(ctx, "bench")
					case "exec_step":
						_, err = c.ExecStep(ctx, tproxy.ExecStepParams{StepID: fmt.Sprintf("s%d", i), Driver: "noop"})
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
