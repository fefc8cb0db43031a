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

// Report is the outcome of a Suite run: medians of Count repetitions, each
// repetition measuring the baseline and tproxy back to back.
type Report struct {
	RawPingPong, Ping, EmptyStep time.Duration // per operation
	// IdleEventLatency is the median time from a worker stamping an event,
	// after a millisecond of idleness, to the host's sink receiving it.
	IdleEventLatency             time.Duration
	RawLinesPerSec, EventsPerSec float64
	// AsyncEventsPerSec is EventsPerSec with the worker's AsyncNotify.
	AsyncEventsPerSec float64
	HostRSS, RawRSS   RSS
	Sessions          Sessions
}

// Run measures everything in cfg. Temporary files go under dir.
func Run(cfg Config, dir string) (*Report, error) {
	var (
		r                      Report
		raw, ping, step, idleL []time.Duration
		rawRate, evRate, async []float64
	)
	for range cfg.Count {
		d, err := os.MkdirTemp(dir, "run")
		if err != nil {
			return nil, err
		}
		rp, pg, st, il, err := roundTrips(cfg, d)
		if err != nil {
			return nil, err
		}
		raw, ping, step, idleL = append(raw, rp), append(ping, pg), append(step, st), append(idleL, il)
		rr, er, ar, err := streams(cfg.Events, d)
		if err != nil {
			return nil, err
		}
		rawRate, evRate, async = append(rawRate, rr), append(evRate, er), append(async, ar)

	}
	r.RawPingPong, r.Ping, r.EmptyStep, r.IdleEventLatency = median(raw), median(ping), median(step), median(idleL)
	r.RawLinesPerSec, r.EventsPerSec, r.AsyncEventsPerSec = median(rawRate), median(evRate), median(async)
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

func roundTrips(cfg Config, dir string) (raw, ping, step, idle time.Duration, err error) {
	e, err := StartRawEcho()
	if err != nil {
		return 0, 0, 0, 0, err
	}
	raw, err = Time(cfg.Pings, e.RoundTrip)
	if err = errors.Join(err, e.Close()); err != nil {
		return 0, 0, 0, 0, err
	}
	h, err := StartHost(dir)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	ping, err = Time(cfg.Pings, h.Ping)
	if err == nil {
		step, err = Time(cfg.Steps, h.EmptyStep)
	}
	if err == nil {
		idle, err = h.IdleEventLatency(200)
	}
	return raw, ping, step, idle, errors.Join(err, h.Close())
}

func streams(n int, dir string) (rawRate, evRate, asyncRate float64, err error) {
	rs, err := StartRawStream(dir)
	if err != nil {
		return 0, 0, 0, err
	}
	t0 := time.Now()
	err = rs.Stream(n)
	rawRate = float64(n) / time.Since(t0).Seconds()
	if err = errors.Join(err, rs.Close()); err != nil {
		return 0, 0, 0, err
	}
	rate := func(start func(string) (*Host, error)) (float64, error) {
		d, err := os.MkdirTemp(dir, "events")
		if err != nil {
			return 0, err
		}
		h, err := start(d)
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		err = h.Stream(n)
		r := float64(n) / time.Since(t0).Seconds()
		return r, errors.Join(err, h.Close())
	}
	if evRate, err = rate(StartHost); err != nil {
		return 0, 0, 0, err
	}
	asyncRate, err = rate(StartAsyncHost)
	return rawRate, evRate, asyncRate, err
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

// Print writes the report as a Markdown table with the ratios to the
// baselines and the goals.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "| measurement\t| baseline\t| tproxy\t| ratio\t| goal\t| met |")
	fmt.Fprintln(tw, "|---\t|---\t|---\t|---\t|---\t|--- |")
	row := func(name, base, tp string, ratio float64, goal string, met bool) {
		fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %.2f×\t| %s\t| %s |\n", name, base, tp, ratio, goal, yes(met))
	}
	us := func(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/1e3) }
	pr := float64(r.Ping) / float64(r.RawPingPong)
	row("ping round trip (vs raw ping-pong)", us(r.RawPingPong), us(r.Ping), pr, "≤ 2.5×", pr <= 2.5)
	sr := float64(r.EmptyStep) / float64(r.Ping)
	row("empty exec_step, 3 notifications (vs ping)", us(r.Ping), us(r.EmptyStep), sr, "≤ 2×", sr <= 2)
	lr := float64(r.IdleEventLatency) / float64(r.Ping)
	row("idle worker: one event to the host's sink (vs ping)", us(r.Ping), us(r.IdleEventLatency), lr, "≤ 1×", lr <= 1)
	er := r.EventsPerSec / r.RawLinesPerSec
	row("events → events.jsonl (vs raw pipe → file)", fmt.Sprintf("%.0f lines/s", r.RawLinesPerSec),
		fmt.Sprintf("%.0f events/s", r.EventsPerSec), er, "≥ 0.5×", er >= 0.5)
	ar := r.AsyncEventsPerSec / r.RawLinesPerSec
	row("same, worker.AsyncNotify (opt-in)", fmt.Sprintf("%.0f lines/s", r.RawLinesPerSec),
		fmt.Sprintf("%.0f events/s", r.AsyncEventsPerSec), ar, "≥ 0.5×", ar >= 0.5)
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	row(fmt.Sprintf("host peak RSS, %d events", r.HostRSS.Events), mib(r.RawRSS.PeakRSS), mib(r.HostRSS.PeakRSS),
		float64(r.HostRSS.PeakRSS)/float64(r.RawRSS.PeakRSS), "≤ 32 MiB", r.HostRSS.PeakRSS <= 32<<20)
	s := r.Sessions
	fmt.Fprintf(tw, "| %d idle in-memory sessions: memory each\t| \t| %.1f KiB (RSS %.1f KiB)\t| \t| ≤ 32 KiB\t| %s |\n",
		s.Sessions, float64(s.BytesPerSession)/1024, float64(s.RSSPerSession)/1024, yes(s.BytesPerSession <= 32<<10))
	fmt.Fprintf(tw, "| %d idle in-memory sessions: goroutines each\t| \t| %.2f\t| \t| ≤ 3\t| %s |\n",
		s.Sessions, s.GoroutinesPerSession, yes(s.GoroutinesPerSession <= 3))
	tw.Flush()
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
