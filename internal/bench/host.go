package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/mask"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// Host is a tproxy host driving Worker in a child process, persisting its
// events and metrics to a session directory.
type Host struct {
	c    *host.Client
	sink *logsink.Files
	lat  *latencySink
	user *CountingSink // nil unless started as users run it
	step int
}

// SecretValue is the secret in the session config of a host started as
// users run it (StartUserHost): long enough (tproxy.MinSecretLen) to be
// masked in free text as well as where it stands.
const SecretValue = "bench-Secret-9f2c41d7"

// CountingSink is the user's sink of a host started as users run it: it
// counts what it is given, and decodes nothing itself.
type CountingSink struct{ events, metrics atomic.Int64 }

// Event counts an event.
func (s *CountingSink) Event(context.Context, tproxy.Event) error { s.events.Add(1); return nil }

// Metric counts a metric.
func (s *CountingSink) Metric(context.Context, tproxy.Metric) error { s.metrics.Add(1); return nil }

// Log drops r.
func (s *CountingSink) Log(context.Context, tproxy.LogRecord) error { return nil }

// Flush does nothing.
func (s *CountingSink) Flush() error { return nil }

// Events is the number of events counted.
func (s *CountingSink) Events() int64 { return s.events.Load() }

// latencySink is the host's sink: Files, noting when each "probe" event
// arrives compared to when the worker stamped it.
type latencySink struct {
	*logsink.Files
	raw wire.RawFunc // Files' raw entry point
	mu  sync.Mutex
	lat []time.Duration
}

func (l *latencySink) note(name string, ts time.Time) {
	if name != "probe" {
		return
	}
	d := time.Since(ts)
	l.mu.Lock()
	l.lat = append(l.lat, d)
	l.mu.Unlock()
}

func (l *latencySink) Event(ctx context.Context, e tproxy.Event) error {
	l.note(e.Name, e.Timestamp)
	return l.Files.Event(ctx, e)
}

func (l *latencySink) EventRaw(ctx context.Context, e *wire.RawEvent) error {
	l.note(e.Name, e.Timestamp)
	return l.raw(ctx, e)
}

// StartHost starts the worker, performs the handshake and prepares a
// session whose log files are in dir. The session has no secret value and
// the files are the host's only sink: the events' fast path all the way.
func StartHost(dir string) (*Host, error) { return startHost(dir, "worker", false) }

// StartAsyncHost is StartHost with a worker whose notifications are
// queued rather than written before Event returns (worker.Worker's
// AsyncNotify).
func StartAsyncHost(dir string) (*Host, error) { return startHost(dir, "worker-async", false) }

// StartUserHost is StartHost in the configuration users run, the one
// host.Run sets up: the session config holds a secret (SecretValue under
// "api_token"), so the host masks every event (internal/mask's Sink over
// a Masker that learned the config, as host.Run's prepare does) and the
// worker masks on its side too; and a user sink, a CountingSink, sits
// beside the session's files (logsink.Multi(files, user)).
func StartUserHost(dir string) (*Host, error) { return startHost(dir, "worker", true) }

// StartUserAsyncHost is StartUserHost with the worker's AsyncNotify.
func StartUserAsyncHost(dir string) (*Host, error) { return startHost(dir, "worker-async", true) }

// wrapTransport, when not nil, wraps the transport of the hosts that
// startHost starts. It is nil but in a test that checks what a host does,
// which sets it to validate the frames against docs/schema; a measurement
// runs without it.
var wrapTransport func(transport.Transport) transport.Transport

func startHost(dir, role string, asUsers bool) (*Host, error) {
	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	sink, err := logsink.OpenDir(dir, "bench")
	if err != nil {
		return nil, err
	}
	var t transport.Transport = &transport.Subprocess{Path: exe, Env: childEnv(role, ""), Stderr: os.Stderr}
	if wrapTransport != nil {
		t = wrapTransport(t)
	}
	lat := &latencySink{Files: sink}
	lat.raw, _ = wire.RawOf(sink)
	h := &Host{sink: sink, lat: lat}
	var hs logsink.Sink = lat
	p := tproxy.PrepareParams{SessionID: "bench",
		Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "empty", Driver: "noop"}, {ID: "stream", Driver: "emit"}}}}
	if asUsers {
		// What host.Run's prepare does with RunSpec.Config, Secrets and
		// Sink (less its byte-cap guard, which only inspects errors).
		secrets := tproxy.Secrets{}
		p.Config = map[string]any{"api_token": SecretValue, "region": "eu-west-1"}
		p.Secrets = &secrets
		m, err := mask.NewMasker(secrets)
		if err != nil {
			sink.Close()
			return nil, err
		}
		m.Learn(p.Config)
		if !m.HasValues() {
			sink.Close()
			return nil, errors.New("bench: the masker learned no secret value from the session config")
		}
		h.user = &CountingSink{}
		hs = mask.Sink(logsink.Multi(lat, h.user), m)
	}
	c, err := host.Start(ctx, t, host.WithSink(hs))
	if err != nil {
		sink.Close()
		return nil, fmt.Errorf("bench: start host: %w", err)
	}
	h.c = c
	if _, err := c.Prepare(ctx, p); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// Ping is one ping round trip.
func (h *Host) Ping() error {
	_, err := h.c.Ping(context.Background(), "bench")
	return err
}

// EmptyStep runs a step whose driver does nothing: the runtime's
// step_start and step_complete events and step_duration_ms metric are
// persisted before it returns. It runs the same step every time, as a
// pipeline re-run does: the worker creates the step's directory the first
// time only (a mkdir costs 20-140 µs on this kind of machine, growing with
// the number of steps in the session directory).
func (h *Host) EmptyStep() error {
	_, err := h.c.ExecStep(context.Background(), tproxy.ExecStepParams{StepID: "empty", Driver: "noop"})
	return err
}

// Stream runs one step that emits n "tick" events; they are all in
// events.jsonl, flushed, when it returns.
func (h *Host) Stream(n int) error {
	h.step++
	_, err := h.c.ExecStep(context.Background(), tproxy.ExecStepParams{StepID: fmt.Sprintf("s%d", h.step), Driver: "emit",
		Config: map[string]any{"events": n}})
	return err
}

// IdleEventLatency runs a step that emits n "probe" events, each after
// the worker has been idle for a millisecond, and returns the median time
// from the worker stamping an event to the host's sink receiving it.
func (h *Host) IdleEventLatency(n int) (time.Duration, error) {
	h.lat.mu.Lock()
	h.lat.lat = h.lat.lat[:0]
	h.lat.mu.Unlock()
	h.step++
	_, err := h.c.ExecStep(context.Background(), tproxy.ExecStepParams{StepID: fmt.Sprintf("s%d", h.step), Driver: "probe",
		Config: map[string]any{"events": n}})
	if err != nil {
		return 0, err
	}
	h.lat.mu.Lock()
	defer h.lat.mu.Unlock()
	if len(h.lat.lat) != n {
		return 0, fmt.Errorf("bench: %d probe events arrived, want %d", len(h.lat.lat), n)
	}
	return median(h.lat.lat), nil
}

// UserEvents is the number of events the user sink received, -1 for a
// host started without one.
func (h *Host) UserEvents() int64 {
	if h.user == nil {
		return -1
	}
	return h.user.Events()
}

// Say runs a step whose driver emits one "said" event with data
// {"text": text}.
func (h *Host) Say(text string) error {
	h.step++
	_, err := h.c.ExecStep(context.Background(), tproxy.ExecStepParams{StepID: fmt.Sprintf("s%d", h.step), Driver: "say",
		Config: map[string]any{"text": text}})
	return err
}

// Dir is the session directory, where events.jsonl is.
func (h *Host) Dir() string { return h.sink.Dir() }

// EventLines counts the lines of events.jsonl.
func (h *Host) EventLines() (int, error) {
	data, err := os.ReadFile(filepath.Join(h.sink.Dir(), logsink.EventsFile))
	return strings.Count(string(data), "\n"), err
}

// Close ends the worker and closes the log files.
func (h *Host) Close() error {
	return errors.Join(h.c.Close(), h.sink.Close())
}
