package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/check"
	"github.com/tproxy/tproxy/logsink"
)

// ErrStepDone is returned by a Step's emitting methods once the step has
// returned: everything a step emits reaches the host before its result.
var ErrStepDone = errors.New("tproxy/worker: step already finished")

// Step is the context of one running step: what the driver reads and how it
// reports back. Its methods are safe for concurrent use by the driver's
// goroutines.
type Step struct {
	ctx         context.Context
	id, driver  string
	number      int
	config      map[string]any
	inputs      map[string]any
	sessionID   string
	sessionCfg  map[string]any
	dir         string
	dirOnce     sync.Once // creates dir on the first call of Dir
	artifactDir string
	sink        logsink.Sink
	logger      *slog.Logger

	mu      sync.Mutex
	done    bool
	rows    int64
	outputs map[string]any
}

// ID returns the step's id.
func (s *Step) ID() string { return s.id }

// Driver returns the name the step's driver was registered under.
func (s *Step) Driver() string { return s.driver }

// SessionID returns the id of the session the step runs in.
func (s *Step) SessionID() string { return s.sessionID }

// Config returns the step's configuration as sent by the host. The map is
// the driver's to read, not to keep after Run returns.
func (s *Step) Config() map[string]any { return s.config }

// SessionConfig returns the session-wide configuration sent with prepare.
func (s *Step) SessionConfig() map[string]any { return s.sessionCfg }

// Input returns the value an earlier step kept under the output that the
// host wired to input name. A driver that cannot do without it fails
// with error type tproxy.ErrorTypeInput:
//
//	v, ok := s.Input("table")
//	t, isTable := v.(*Table)
//	if !ok || !isTable {
//		return worker.Fail(tproxy.ErrorTypeInput, fmt.Errorf("input table: missing or not a table (%T)", v))
//	}
func (s *Step) Input(name string) (any, bool) {
	v, ok := s.inputs[name]
	return v, ok
}

// Inputs returns the names of the step's inputs, sorted: those the host
// wired to outputs of earlier steps, each readable with Input.
func (s *Step) Inputs() []string {
	return slices.Sorted(maps.Keys(s.inputs))
}

// Dir returns a directory the step may write files to; it lives inside the
// session directory, which cleanup removes. It is created by the first
// call of each run, so that a step that writes no files costs no
// filesystem calls for it; if that fails, the failure is logged to the
// host and the driver's own file operations report it.
func (s *Step) Dir() string {
	s.dirOnce.Do(func() {
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			s.logger.Error("tproxy/worker: creating the step directory failed", "dir", s.dir, "err", err)
		}
	})
	return s.dir
}

// ArtifactDir returns the directory for the step's artifacts: files the
// host fetches into its session directory once the step ends, successful
// or not. It already holds cleaned_config.json, the step's config with
// secrets masked.
func (s *Step) ArtifactDir() string { return s.artifactDir }

// Logger returns a logger whose records are sent to the host as log
// notifications, tagged with the step id.
func (s *Step) Logger() *slog.Logger { return s.logger }

// SetRows records how many rows the step processed; it is reported in the
// step's result and as the rows_processed metric.
func (s *Step) SetRows(n int64) {
	s.mu.Lock()
	s.rows = n
	s.mu.Unlock()
}

// SetOutput keeps v in the worker under key, for later steps of the session
// to read as an input. Only a summary of v crosses the wire: v's Summary()
// if it implements Summarizer, otherwise its type and length.
func (s *Step) SetOutput(key string, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.outputs == nil {
		s.outputs = map[string]any{}
	}
	s.outputs[key] = v
}

// Event emits an event named name with data, stamped with the current
// time and the step id. An empty name, or one of the events the host
// writes itself (tproxy.EventRunStart and the others documented "host"),
// is an error, and nothing is sent: such an event would pass for the
// host's (docs/protocol.md section 6.1).
func (s *Step) Event(name string, data map[string]any) error {
	if err := check.EventName(name); err != nil {
		return fmt.Errorf("worker: event %q refused: %w", name, err)
	}
	if err := s.live(); err != nil {
		return err
	}
	return s.sink.Event(s.ctx, tproxy.Event{Name: name, Timestamp: time.Now().UTC(), StepID: s.id, Data: data})
}

// A MetricOption adds detail to a metric.
type MetricOption func(*tproxy.Metric)

// Unit sets a metric's unit, such as "ms" or "rows".
func Unit(u string) MetricOption { return func(m *tproxy.Metric) { m.Unit = u } }

// Tag adds a tag to a metric.
func Tag(key, value string) MetricOption {
	return func(m *tproxy.Metric) {
		if m.Tags == nil {
			m.Tags = map[string]string{}
		}
		m.Tags[key] = value
	}
}

// Metric emits a metric, stamped with the current time and the step id.
func (s *Step) Metric(name string, value float64, opts ...MetricOption) error {
	if err := s.live(); err != nil {
		return err
	}
	m := tproxy.Metric{Name: name, Value: value, Timestamp: time.Now().UTC(), StepID: s.id}
	for _, o := range opts {
		o(&m)
	}
	return s.sink.Metric(s.ctx, m)
}

func (s *Step) live() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return ErrStepDone
	}
	return nil
}

// finish marks the step done and returns what it recorded.
func (s *Step) finish() (rows int64, outputs map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	return s.rows, maps.Clone(s.outputs)
}
