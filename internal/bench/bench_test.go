package bench_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy/internal/bench"
)

func TestMain(m *testing.M) {
	bench.RunRole()
	goleak.VerifyTestMain(m)
}

// rawPingPong measures the raw floor of a ping right after a tproxy
// measurement, so that the ratio compares numbers taken moments apart on
// a shared, noisy machine.
func rawPingPong(b *testing.B, n int) time.Duration {
	b.Helper()
	e, err := bench.StartRawEcho()
	if err != nil {
		b.Fatal(err)
	}
	d, err := bench.Time(min(n, 20000), e.RoundTrip)
	if err = errors.Join(err, e.Close()); err != nil {
		b.Fatal(err)
	}
	return d
}

// rawLineRate measures the raw floor of the event stream, likewise.
func rawLineRate(b *testing.B, n int) float64 {
	b.Helper()
	rs, err := bench.StartRawStream(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	n = max(n, 100000)
	t0 := time.Now()
	err = rs.Stream(n)
	rate := float64(n) / time.Since(t0).Seconds()
	if err = errors.Join(err, rs.Close()); err != nil {
		b.Fatal(err)
	}
	return rate
}

// BenchmarkRawPingPong is the floor for BenchmarkPing: one line to a child
// process and the same line back, over plain pipes.
func BenchmarkRawPingPong(b *testing.B) {
	e, err := bench.StartRawEcho()
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	for b.Loop() {
		if err := e.RoundTrip(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPing is the protocol's round trip to a worker subprocess; x_raw
// is its ratio to the raw ping-pong (goal ≤ 2.5).
func BenchmarkPing(b *testing.B) {
	h, err := bench.StartHost(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	for b.Loop() {
		if err := h.Ping(); err != nil {
			b.Fatal(err)
		}
	}
	perOp := float64(b.Elapsed()) / float64(b.N)
	b.StopTimer()
	b.ReportMetric(perOp/float64(rawPingPong(b, b.N)), "x_raw")
}

// BenchmarkEmptyStep runs a step whose driver does nothing; the runtime's
// three notifications are persisted before ExecStep returns. x_ping is its
// ratio to a ping on the same connection (goal ≤ 2).
func BenchmarkEmptyStep(b *testing.B) {
	h, err := bench.StartHost(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	for b.Loop() {
		if err := h.EmptyStep(); err != nil {
			b.Fatal(err)
		}
	}
	perStep := float64(b.Elapsed()) / float64(b.N)
	b.StopTimer()
	ping, err := bench.Time(5000, h.Ping)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(perStep/float64(ping), "x_ping")
}

// BenchmarkIdleEventLatency measures how long a single event emitted by an
// otherwise idle worker takes to reach the host's sink (median of 200),
// and its ratio to a ping round trip on the same connection (goal ≤ 1).
// It runs once whatever -benchtime says.
func BenchmarkIdleEventLatency(b *testing.B) {
	h, err := bench.StartHost(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	for b.Loop() {
		lat, err := h.IdleEventLatency(200)
		if err != nil {
			b.Fatal(err)
		}
		ping, err := bench.Time(2000, h.Ping)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(lat)/1e3, "latency_us")
		b.ReportMetric(float64(lat)/float64(ping), "x_ping")
	}
}

// BenchmarkRawStreamToFile is the floor for BenchmarkStreamEvents: a child
// process writes b.N lines of the event line's size, one write per line;
// this process appends each line to a buffered file.
func BenchmarkRawStreamToFile(b *testing.B) {
	rs, err := bench.StartRawStream(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer rs.Close()
	b.SetBytes(int64(bench.EventLineSize()))
	b.ResetTimer()
	if err := rs.Stream(b.N); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkStreamEvents streams b.N events from one step in a worker
// subprocess into events.jsonl; ExecStep returns once all are flushed.
// x_raw is the rate's ratio to the raw stream's (goal ≥ 0.5).
func BenchmarkStreamEvents(b *testing.B) { streamEvents(b, bench.StartHost) }

// BenchmarkStreamEventsAsync is BenchmarkStreamEvents with the worker's
// AsyncNotify.
func BenchmarkStreamEventsAsync(b *testing.B) { streamEvents(b, bench.StartAsyncHost) }

func streamEvents(b *testing.B, start func(string) (*bench.Host, error)) {
	h, err := start(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	b.SetBytes(int64(bench.EventLineSize()))
	b.ResetTimer()
	if err := h.Stream(b.N); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(rate/rawLineRate(b, b.N), "x_raw")
	lines, err := h.EventLines()
	if err != nil {
		b.Fatal(err)
	}
	// The runtime adds session_initialized, step_start and step_complete.
	if want := b.N + 3; lines != want {
		b.Fatalf("events.jsonl has %d lines, want %d", lines, want)
	}
}

// BenchmarkHostRSS streams 1,000,000 events through a host in a child
// process and reports its peak RSS (goal ≤ 32 MiB), next to the raw
// stream's. It runs once whatever -benchtime says.
func BenchmarkHostRSS(b *testing.B) {
	const n = 1000000
	for b.Loop() {
		raw, err := bench.RawRSS(n)
		if err != nil {
			b.Fatal(err)
		}
		tp, err := bench.HostRSS(n)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(tp.PeakRSS)/(1<<20), "host_MiB")
		b.ReportMetric(float64(raw.PeakRSS)/(1<<20), "raw_MiB")
	}
}

// BenchmarkIdleSessions opens 1,000 in-memory sessions in a child process
// and reports each one's memory (goal ≤ 32 KiB) and goroutines (goal ≤ 3).
func BenchmarkIdleSessions(b *testing.B) {
	for b.Loop() {
		s, err := bench.IdleSessions(1000)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(s.BytesPerSession)/1024, "KiB/session")
		b.ReportMetric(float64(s.RSSPerSession)/1024, "rssKiB/session")
		b.ReportMetric(s.GoroutinesPerSession, "goroutines/session")
	}
}

// TestSuiteRuns keeps the suite working under plain go test: every
// measurement runs once, small.
func TestSuiteRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dozen processes")
	}
	cfg := bench.Config{Pings: 20, Steps: 5, Events: 200, RSSEvents: 1000, Sessions: 5, Count: 1}
	r, err := bench.Run(cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if r.Sessions.Sessions != 5 || r.HostRSS.PeakRSS <= 0 || r.EventsPerSec <= 0 || r.AsyncEventsPerSec <= 0 {
		t.Errorf("implausible report: %+v", r)
	}
	r.Print(os.Stderr)
}
