package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"
)

// Config sets the sizes of a Suite run.
type Config struct {
	// Pings is the number of round trips per ping measurement.
	Pings int
	// Steps is the number of empty steps per measurement.
	Steps int
	// Events is the number of events per stream measurement.
	Events int
	// RSSEvents is the number of events streamed for the RSS check.
	RSSEvents int
	// Sessions is the number of idle in-memory sessions to open.
	Sessions int
	// Count is how many times each timed measurement is repeated; the
	// table shows the median.
	Count int
}

// DefaultConfig is what the goals are stated for.
var DefaultConfig = Config{Pings: 20000, Steps: 5000, Events: 300000, RSSEvents: 1000000, Sessions: 1000, Count: 3}

// The goals (issue 14).
const (
	// GoalPingVsRPC bounds a ping's round trip, as a multiple of a plain
	// jsonrpc2 Conn.Call's.
	GoalPingVsRPC = 1.1
	// GoalStepVsPing bounds an empty exec_step, as a multiple of a ping.
	GoalStepVsPing = 3.0
	// GoalEventsVsRaw is the least events → events.jsonl rate, as users
	// run it, as a fraction of the raw pipe → file rate.
	GoalEventsVsRaw = 0.5
	// GoalAsyncEventsVsRaw is GoalEventsVsRaw with AsyncNotify.
	GoalAsyncEventsVsRaw = 0.8
	// GoalEventsVsRPC is the least events → events.jsonl rate, as users
	// run it, as a multiple of plain jsonrpc2's Conn.Notify → file.
	GoalEventsVsRPC = 8.0
	// GoalSessionBytes bounds what an idle in-memory session costs.
	GoalSessionBytes = 64 << 10
	// GoalSessionGoroutines bounds an idle in-memory session's
	// goroutines.
	GoalSessionGoroutines = 8
)

// Report is the outcome of a Suite run: medians of Count repetitions, each
// repetition measuring the baselines and tproxy back to back.
type Report struct {
	// RawPingPong is one line to a child and back over plain pipes;
	// RPCCall a plain jsonrpc2 Conn.Call round trip; Ping and EmptyStep
	// tproxy's. All per operation.
	RawPingPong, RPCCall, Ping, EmptyStep time.Duration
	// IdleEventLatency is the median time from a worker stamping an event,
	// after a millisecond of idleness, to the host's sink receiving it.
	IdleEventLatency time.Duration
	// RawLinesPerSec is the raw pipe → file rate; RPCNotifyPerSec plain
	// jsonrpc2's Conn.Notify → file.
	RawLinesPerSec, RPCNotifyPerSec float64
	// UserEventsPerSec is events → events.jsonl as users run it (a secret
	// in the session, a user sink beside the files: StartUserHost), and
	// UserAsyncEventsPerSec the same with the worker's AsyncNotify.
	UserEventsPerSec, UserAsyncEventsPerSec float64
	// EventsPerSec and AsyncEventsPerSec are the same with no secret and
	// the files as the only sink (StartHost, StartAsyncHost).
	EventsPerSec, AsyncEventsPerSec float64
	HostRSS, RawRSS                 RSS
	Sessions                        Sessions

	// The ratios, each taken within a repetition between measurements
	// made one after the other: tproxy's cost (a time) or rate over its
	// baseline's.
	PingVsRPC, PingVsRaw, StepVsPing, IdleVsPing                  Ratio
	UserVsRaw, UserAsyncVsRaw, UserVsRPC, EventsVsRaw, AsyncVsRaw Ratio
	// RawVsRPC is the raw pipe → file rate over jsonrpc2's Notify → file:
	// what UserVsRPC would be if tproxy cost nothing above the raw pipe.
	RawVsRPC Ratio
}

// Ratio is the median of the repetitions' ratios, and their range.
type Ratio struct{ Median, Min, Max float64 }

// sample is one repetition's timed measurements.
type sample struct {
	raw, rpc, ping, step, idle                time.Duration
	rawRate, rpcRate, user, userAsync, ev, as float64
}

// Run measures everything in cfg. Temporary files go under dir.
func Run(cfg Config, dir string) (*Report, error) {
	var ss []sample
	for range cfg.Count {
		d, err := os.MkdirTemp(dir, "run")
		if err != nil {
			return nil, err
		}
		var s sample
		if err := roundTrips(cfg, d, &s); err != nil {
			return nil, err
		}
		if err := streams(cfg.Events, d, &s); err != nil {
			return nil, err
		}
		ss = append(ss, s)
	}
	md := func(f func(sample) time.Duration) time.Duration {
		xs := make([]time.Duration, len(ss))
		for i, s := range ss {
			xs[i] = f(s)
		}
		return median(xs)
	}
	mr := func(f func(sample) float64) float64 {
		xs := make([]float64, len(ss))
		for i, s := range ss {
			xs[i] = f(s)
		}
		return median(xs)
	}
	ratio := func(f func(sample) float64) Ratio {
		xs := make([]float64, len(ss))
		for i, s := range ss {
			xs[i] = f(s)
		}
		return Ratio{Median: median(xs), Min: slices.Min(xs), Max: slices.Max(xs)}
	}
	r := Report{
		RawPingPong:           md(func(s sample) time.Duration { return s.raw }),
		RPCCall:               md(func(s sample) time.Duration { return s.rpc }),
		Ping:                  md(func(s sample) time.Duration { return s.ping }),
		EmptyStep:             md(func(s sample) time.Duration { return s.step }),
		IdleEventLatency:      md(func(s sample) time.Duration { return s.idle }),
		RawLinesPerSec:        mr(func(s sample) float64 { return s.rawRate }),
		RPCNotifyPerSec:       mr(func(s sample) float64 { return s.rpcRate }),
		UserEventsPerSec:      mr(func(s sample) float64 { return s.user }),
		UserAsyncEventsPerSec: mr(func(s sample) float64 { return s.userAsync }),
		EventsPerSec:          mr(func(s sample) float64 { return s.ev }),
		AsyncEventsPerSec:     mr(func(s sample) float64 { return s.as }),

		PingVsRPC:      ratio(func(s sample) float64 { return float64(s.ping) / float64(s.rpc) }),
		PingVsRaw:      ratio(func(s sample) float64 { return float64(s.ping) / float64(s.raw) }),
		StepVsPing:     ratio(func(s sample) float64 { return float64(s.step) / float64(s.ping) }),
		IdleVsPing:     ratio(func(s sample) float64 { return float64(s.idle) / float64(s.ping) }),
		UserVsRaw:      ratio(func(s sample) float64 { return s.user / s.rawRate }),
		UserAsyncVsRaw: ratio(func(s sample) float64 { return s.userAsync / s.rawRate }),
		UserVsRPC:      ratio(func(s sample) float64 { return s.user / s.rpcRate }),
		EventsVsRaw:    ratio(func(s sample) float64 { return s.ev / s.rawRate }),
		AsyncVsRaw:     ratio(func(s sample) float64 { return s.as / s.rawRate }),
		RawVsRPC:       ratio(func(s sample) float64 { return s.rawRate / s.rpcRate }),
	}
	var err error
	if r.RawRSS, err = RawRSS(cfg.RSSEvents); err != nil {
		return nil, err
	}
	if r.HostRSS, err = HostRSS(cfg.RSSEvents); err != nil {
		return nil, err
	}
	if r.Sessions, err = IdleSessions(cfg.Sessions); err != nil {
		return nil, err
	}
	return &r, nil
}

// roundTrips measures the raw ping-pong, then jsonrpc2's Call, then a
// tproxy ping, an empty step and the idle event latency.
func roundTrips(cfg Config, dir string, s *sample) error {
	e, err := StartRawEcho()
	if err != nil {
		return err
	}
	s.raw, err = Time(cfg.Pings, e.RoundTrip)
	if err = errors.Join(err, e.Close()); err != nil {
		return err
	}
	rp, err := StartRPCPing()
	if err != nil {
		return err
	}
	s.rpc, err = Time(cfg.Pings, rp.Call)
	if err = errors.Join(err, rp.Close()); err != nil {
		return err
	}
	h, err := StartHost(dir)
	if err != nil {
		return err
	}
	s.ping, err = Time(cfg.Pings, h.Ping)
	if err == nil {
		s.step, err = Time(cfg.Steps, h.EmptyStep)
	}
	if err == nil {
		s.idle, err = h.IdleEventLatency(200)
	}
	return errors.Join(err, h.Close())
}

// streams measures the raw stream, tproxy's event stream as users run it
// (durable, then with AsyncNotify), jsonrpc2's Notify, and tproxy's event
// stream with the fast path all the way (durable, then with AsyncNotify):
// each goal's tproxy figure is at most one measurement away from its
// baseline.
func streams(n int, dir string, s *sample) error {
	rate := func(start func(string) (streamer, error)) (float64, error) {
		d, err := os.MkdirTemp(dir, "events")
		if err != nil {
			return 0, err
		}
		st, err := start(d)
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		err = st.Stream(n)
		r := float64(n) / time.Since(t0).Seconds()
		return r, errors.Join(err, st.Close())
	}
	host := func(start func(string) (*Host, error)) func(string) (streamer, error) {
		return func(d string) (streamer, error) { return start(d) }
	}
	for _, m := range []struct {
		to    *float64
		start func(string) (streamer, error)
	}{
		{&s.rawRate, func(d string) (streamer, error) { return StartRawStream(d) }},
		{&s.user, host(StartUserHost)},
		{&s.userAsync, host(StartUserAsyncHost)},
		{&s.rpcRate, func(d string) (streamer, error) { return StartRPCStream(d) }},
		{&s.ev, host(StartHost)},
		{&s.as, host(StartAsyncHost)},
	} {
		var err error
		if *m.to, err = rate(m.start); err != nil {
			return err
		}
	}
	return nil
}

// streamer is what streams n events or lines into a file.
type streamer interface {
	Stream(n int) error
	Close() error
}

// Time runs f n times and returns the mean time per call.
func Time(n int, f func() error) (time.Duration, error) {
	t0 := time.Now()
	for range n {
		if err := f(); err != nil {
			return 0, err
		}
	}
	return time.Since(t0) / time.Duration(n), nil
}

func median[T int64 | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// Print writes the report as a Markdown table: each row's baseline, the
// tproxy figure (medians of the repetitions), the median of the
// repetitions' ratios with their range, the goal and whether the median
// meets it. Rows without a goal are there for comparison.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "| measurement\t| baseline\t| tproxy\t| ratio (range)\t| goal\t| met |")
	fmt.Fprintln(tw, "|---\t|---\t|---\t|---\t|---\t|--- |")
	met, goals := 0, 0
	ratio := func(x Ratio) string {
		if x.Min == x.Max {
			return fmt.Sprintf("%.2f×", x.Median)
		}
		return fmt.Sprintf("%.2f× (%.2f–%.2f)", x.Median, x.Min, x.Max)
	}
	row := func(name, base, tp string, x Ratio, goal string, ok bool) {
		goals++
		if ok {
			met++
		}
		fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %s\t| %s\t| %s |\n", name, base, tp, ratio(x), goal, yes(ok))
	}
	info := func(name, base, tp string, x Ratio) {
		fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %s\t| —\t| — |\n", name, base, tp, ratio(x))
	}
	us := func(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/1e3) }
	perSec := func(x float64, unit string) string { return fmt.Sprintf("%.0f %s/s", x, unit) }

	row("ping round trip (vs jsonrpc2 Conn.Call, synchronous handler)", us(r.RPCCall), us(r.Ping), r.PingVsRPC,
		fmt.Sprintf("≤ %.1f×", GoalPingVsRPC), r.PingVsRPC.Median <= GoalPingVsRPC)
	info("ping round trip (vs raw pipe ping-pong)", us(r.RawPingPong), us(r.Ping), r.PingVsRaw)
	row("empty exec_step, 3 notifications (vs ping)", us(r.Ping), us(r.EmptyStep), r.StepVsPing,
		fmt.Sprintf("≤ %.0f×", GoalStepVsPing), r.StepVsPing.Median <= GoalStepVsPing)

	raw := perSec(r.RawLinesPerSec, "lines")
	row("events → events.jsonl, secret + user sink (vs raw pipe → file)", raw, perSec(r.UserEventsPerSec, "events"),
		r.UserVsRaw, fmt.Sprintf("≥ %.1f×", GoalEventsVsRaw), r.UserVsRaw.Median >= GoalEventsVsRaw)
	row("same, worker.AsyncNotify (vs raw pipe → file)", raw, perSec(r.UserAsyncEventsPerSec, "events"),
		r.UserAsyncVsRaw, fmt.Sprintf("≥ %.1f×", GoalAsyncEventsVsRaw), r.UserAsyncVsRaw.Median >= GoalAsyncEventsVsRaw)
	row("events → events.jsonl, secret + user sink (vs jsonrpc2 Conn.Notify → file)", perSec(r.RPCNotifyPerSec, "events"),
		perSec(r.UserEventsPerSec, "events"), r.UserVsRPC, fmt.Sprintf("≥ %.0f×", GoalEventsVsRPC),
		r.UserVsRPC.Median >= GoalEventsVsRPC)
	info("raw pipe → file, the ceiling of the row above (vs jsonrpc2 Conn.Notify → file)", perSec(r.RPCNotifyPerSec, "events"),
		raw, r.RawVsRPC)
	info("events → events.jsonl, no secret, files only (vs raw pipe → file)", raw, perSec(r.EventsPerSec, "events"),
		r.EventsVsRaw)
	info("same, worker.AsyncNotify (vs raw pipe → file)", raw, perSec(r.AsyncEventsPerSec, "events"), r.AsyncVsRaw)
	info("idle worker: one event to the host's sink (vs ping)", us(r.Ping), us(r.IdleEventLatency), r.IdleVsPing)
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	rss := float64(r.HostRSS.PeakRSS) / float64(r.RawRSS.PeakRSS)
	info(fmt.Sprintf("host peak RSS, %d events (vs raw pipe → file)", r.HostRSS.Events), mib(r.RawRSS.PeakRSS),
		mib(r.HostRSS.PeakRSS), Ratio{rss, rss, rss})

	s := r.Sessions
	fmt.Fprintf(tw, "| %d idle in-memory sessions: memory each\t| \t| %.1f KiB (RSS %.1f KiB)\t| \t| ≤ %d KiB\t| %s |\n",
		s.Sessions, float64(s.BytesPerSession)/1024, float64(s.RSSPerSession)/1024, GoalSessionBytes>>10,
		yes(s.BytesPerSession <= GoalSessionBytes))
	fmt.Fprintf(tw, "| %d idle in-memory sessions: goroutines each\t| \t| %.2f\t| \t| ≤ %d\t| %s |\n",
		s.Sessions, s.GoroutinesPerSession, GoalSessionGoroutines, yes(s.GoroutinesPerSession <= GoalSessionGoroutines))
	goals += 2
	if s.BytesPerSession <= GoalSessionBytes {
		met++
	}
	if s.GoroutinesPerSession <= GoalSessionGoroutines {
		met++
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d of %d goals met.\n", met, goals)
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
