package bench_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy/internal/bench"
	"github.com/tproxy/tproxy/internal/wiretest"
)

func TestMain(m *testing.M) {
	bench.RunRole()
	goleak.VerifyTestMain(wiretest.Main(m)) // a tap reporting after its test ended fails the run
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

// rpcCall measures plain jsonrpc2's Call round trip right after a tproxy
// measurement, likewise.
func rpcCall(b *testing.B, n int) time.Duration {
	b.Helper()
	r, err := bench.StartRPCPing()
	if err != nil {
		b.Fatal(err)
	}
	d, err := bench.Time(min(n, 20000), r.Call)
	if err = errors.Join(err, r.Close()); err != nil {
		b.Fatal(err)
	}
	return d
}

// rpcNotifyRate measures plain jsonrpc2's Notify → file rate, likewise.
func rpcNotifyRate(b *testing.B, n int) float64 {
	b.Helper()
	rs, err := bench.StartRPCStream(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	n = min(max(n, 20000), 300000)
	t0 := time.Now()
	err = rs.Stream(n)
	rate := float64(n) / time.Since(t0).Seconds()
	if err = errors.Join(err, rs.Close()); err != nil {
		b.Fatal(err)
	}
	return rate
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

// BenchmarkJSONRPC2Call is the floor for BenchmarkPing in the library
// tproxy is built on: sourcegraph/jsonrpc2's Conn.Call of "ping" to a
// child process whose Conn answers with a synchronous handler.
func BenchmarkJSONRPC2Call(b *testing.B) {
	r, err := bench.StartRPCPing()
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for b.Loop() {
		if err := r.Call(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPing is the protocol's round trip to a worker subprocess;
// x_jsonrpc2 is its ratio to plain jsonrpc2's Call round trip (goal
// ≤ 1.1), and x_raw its ratio to the raw ping-pong.
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
	b.ReportMetric(perOp/float64(rpcCall(b, b.N)), "x_jsonrpc2")
	b.ReportMetric(perOp/float64(rawPingPong(b, b.N)), "x_raw")
}

// BenchmarkEmptyStep runs a step whose driver does nothing; the runtime's
// three notifications are persisted before ExecStep returns. x_ping is its
// ratio to a ping on the same connection (goal ≤ 3).
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
// and its ratio to a ping round trip on the same connection.
// An iteration takes a fraction of a second, so the default -benchtime
// runs it once or twice.
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

// BenchmarkJSONRPC2NotifyToFile is the floor for the event stream in the
// library tproxy is built on: a child process's jsonrpc2 Conn sends b.N
// event notifications; this process's Conn handler appends each one's
// params to a buffered file.
func BenchmarkJSONRPC2NotifyToFile(b *testing.B) {
	rs, err := bench.StartRPCStream(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer rs.Close()
	b.ResetTimer()
	if err := rs.Stream(b.N); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkStreamEvents streams b.N events from one step in a worker
// subprocess into events.jsonl, with no secret in the session and the
// files as the host's only sink; ExecStep returns once all are flushed.
// x_raw is the rate's ratio to the raw stream's.
func BenchmarkStreamEvents(b *testing.B) { streamEvents(b, bench.StartHost, false) }

// BenchmarkStreamEventsAsync is BenchmarkStreamEvents with the worker's
// AsyncNotify.
func BenchmarkStreamEventsAsync(b *testing.B) { streamEvents(b, bench.StartAsyncHost, false) }

// BenchmarkStreamEventsUser is BenchmarkStreamEvents as users run it: a
// secret in the session, so the host masks, and a user sink beside the
// files (goals: x_raw ≥ 0.5, x_jsonrpc2 ≥ 8, the ratio to plain
// jsonrpc2's Notify → file).
func BenchmarkStreamEventsUser(b *testing.B) { streamEvents(b, bench.StartUserHost, true) }

// BenchmarkStreamEventsUserAsync is BenchmarkStreamEventsUser with the
// worker's AsyncNotify (goal: x_raw ≥ 0.8).
func BenchmarkStreamEventsUserAsync(b *testing.B) { streamEvents(b, bench.StartUserAsyncHost, true) }

func streamEvents(b *testing.B, start func(string) (*bench.Host, error), vsRPC bool) {
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
	if vsRPC {
		b.ReportMetric(rate/rpcNotifyRate(b, b.N), "x_jsonrpc2")
	}
	lines, err := h.EventLines()
	if err != nil {
		b.Fatal(err)
	}
	// The runtime adds session_initialized, step_start and step_complete.
	if want := b.N + 3; lines != want {
		b.Fatalf("events.jsonl has %d lines, want %d", lines, want)
	}
	if u := h.UserEvents(); u >= 0 && u != int64(lines) {
		b.Fatalf("the user sink has %d events, events.jsonl %d", u, lines)
	}
}

// BenchmarkHostRSS streams 1,000,000 events through a host in a child
// process and reports its peak RSS, next to the raw stream's. An
// iteration takes seconds, so the default -benchtime runs it once.
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
// and reports each one's memory (goal ≤ 64 KiB) and goroutines (goal ≤ 8).
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
	if r.Sessions.Sessions != 5 || r.HostRSS.PeakRSS <= 0 || r.EventsPerSec <= 0 || r.AsyncEventsPerSec <= 0 ||
		r.UserEventsPerSec <= 0 || r.UserAsyncEventsPerSec <= 0 || r.RPCCall <= 0 || r.RPCNotifyPerSec <= 0 {
		t.Errorf("implausible report: %+v", r)
	}
	r.Print(os.Stderr)
}

// TestUserHostMasks checks that the host started as users run it masks the
// session's secret on its way to events.jsonl, and that the user sink
// sees every event the files do.
func TestUserHostMasks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a worker process")
	}
	bench.TapHosts(t)
	h, err := bench.StartUserHost(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Say("the token is " + bench.SecretValue); err != nil {
		h.Close()
		t.Fatal(err)
	}
	if err := h.Stream(10); err != nil {
		h.Close()
		t.Fatal(err)
	}
	lines, err := h.EventLines()
	if err = errors.Join(err, h.Close()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(h.Dir(), "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), bench.SecretValue) || !strings.Contains(string(data), "the token is "+tproxy.Masked) {
		t.Errorf("events.jsonl does not have the secret masked:\n%s", data)
	}
	if u := h.UserEvents(); u != int64(lines) {
		t.Errorf("the user sink has %d events, events.jsonl %d", u, lines)
	}
}
