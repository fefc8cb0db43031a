package e2b_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/transport"
)

// BenchmarkSessionOverhead measures a whole session of one empty step
// (host.RunManifest: start, handshake, prepare, exec_step, cleanup,
// close, status.json) over the local E2B, in the same run:
//
//   - subprocess: a local worker, for reference;
//
//   - e2b: a fresh sandbox per session (create, upload, start);
//
//   - e2b-template: a fresh sandbox per session whose template has the
//     worker baked in (E2B.WorkerPath: create, one Stat, start);
//
//   - e2b-pool: a Pool of 2 with a warm sandbox waiting, as when sessions
//     are spaced or longer than a warm-up (the timer stops while the pool
//     refills);
//
//   - e2b-pool-back-to-back: the same pool with sessions back to back,
//     where the refills compete with the sessions: throughput, not the
//     latency a session sees.
//
//     go test -run '^$' -bench SessionOverhead ./transport/e2b
func BenchmarkSessionOverhead(b *testing.B) {
	srv := newServer(b, e2bfake.Options{KeepaliveInterval: 50 * time.Second})
	baked := bakedServer(b)
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "noop", Driver: "noop"}}}
	session := func(b *testing.B, tr transport.Transport, dir string) {
		st, err := host.RunManifest(context.Background(), tr, host.RunSpec{Dir: dir, Manifest: m, Options: quietHost()})
		if err != nil || st.Outcome != host.OutcomeSuccess {
			b.Fatalf("session %s: %v", dir, err)
		}
	}
	for _, tt := range []struct {
		name string
		tr   func(b *testing.B) transport.Transport
		warm bool // wait, off the clock, until the pool is full again
	}{
		{"subprocess", func(b *testing.B) transport.Transport { return subprocess(b, "worker") }, false},
		{"e2b", func(b *testing.B) transport.Transport { return newE2B(b, srv, "worker") }, false},
		{"e2b-template", func(b *testing.B) transport.Transport { return bakedE2B(b, baked, "worker") }, false},
		{"e2b-pool", func(b *testing.B) transport.Transport { return newPool(b, srv, 2) }, true},
		{"e2b-pool-back-to-back", func(b *testing.B) transport.Transport { return newPool(b, srv, 2) }, false},
	} {
		b.Run(tt.name, func(b *testing.B) {
			tr := tt.tr(b)
			base := b.TempDir()
			b.ResetTimer()
			for i := range b.N {
				session(b, tr, filepath.Join(base, fmt.Sprint(i)))
				if pool, ok := tr.(interface {
					Idle() int
					Size() int
				}); ok && tt.warm {
					b.StopTimer()
					for pool.Idle() < pool.Size() {
						time.Sleep(time.Millisecond)
					}
					b.StartTimer()
				}
			}
		})
	}
}

func quietHost() []host.Option {
	return []host.Option{host.WithLogger(slog.New(slog.DiscardHandler))}
}
