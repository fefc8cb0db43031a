package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
)

// Caps on what a session summary keeps, so that show and report stay
// small and fast whatever the session holds: a driver may send a million
// events of one name, or of a million names. Everything is still counted.
const (
	// maxKinds is how many (step, event name) or (step, metric name)
	// pairs are tracked one by one; the rest are only counted.
	maxKinds = 64
	// eventsPerKind is how many events of one kind a report embeds.
	eventsPerKind = 100
	// pointsPerSeries is how many points of one metric series a report
	// charts.
	pointsPerSeries = 300
	// maxDataBytes caps an embedded event's data, as JSON.
	maxDataBytes = 300
	// maxLogAlerts is how many WARN and ERROR log records show lists: the
	// last ones.
	maxLogAlerts = 20
)

// kindKey names a kind of record: a step (or "" for the session) and an
// event or metric name.
type kindKey struct{ step, name string }

// session is what show and report know of a session directory: its
// status.json, and a one-pass digest of events.jsonl and metrics.jsonl.
type session struct {
	dir    string
	status host.Status

	events, metrics int64 // lines read
	// eventKinds count events per kind, in order of first appearance;
	// otherEvents are the events of kinds beyond maxKinds.
	eventKinds  []*eventKind
	otherEvents int64
	series      []*series
	otherPoints int64

	// steps holds what the events say about each step, by id: when it
	// started and ended, and its error message.
	steps map[string]*stepTimes
	// phases are the run's phases, from phase_complete events.
	phases []span
	// runStart and runEnd bound the run: run_start's time (else
	// status.json's) and the last record's.
	runStart, runEnd time.Time
	// logs digests logs.jsonl; nil when the session has none (sessions
	// written before the host kept log records).
	logs *logDigest

	eventIdx map[kindKey]*eventKind
	seriesAt map[kindKey]*series
}

// eventKind is the events of one kind: their count and an even sample.
type eventKind struct {
	kindKey
	count  int64
	sample sampler[eventRow]
}

// eventRow is one embedded event.
type eventRow struct {
	Seq    int64           `json:"seq"`
	TS     time.Time       `json:"ts"`
	Step   string          `json:"step,omitempty"`
	Name   string          `json:"name"`
	Source string          `json:"source,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

// series is one metric of one step: exact aggregates and a sample of its
// points.
type series struct {
	kindKey
	unit                string
	count               int64
	sum, min, max, last float64
	invalid             int64 // NaN or ±Inf values (value_invalid)
	sample              sampler[point]
}

// point is one metric value at a time.
type point struct {
	T time.Time
	V float64
}

// stepTimes is what events say about one step.
type stepTimes struct {
	start, end time.Time
	message    string // step_failed's message
}

// span is a named interval.
type span struct {
	name       string
	start, end time.Time
}

// The levels log records are counted by, lowest first: a record's level
// is read as the host reads a worker's (docs/protocol.md), any case, with
// slog's offsets ("WARN+2" is a WARN), and anything else as INFO.
const (
	levelDebug = iota
	levelInfo
	levelWarn
	levelError
	numLevels
)

var levelNames = [numLevels]string{"DEBUG", "INFO", "WARN", "ERROR"}

// logLevel is the level a log record's level string is counted as.
func logLevel(s string) int {
	var l slog.Level
	if l.UnmarshalText([]byte(s)) != nil {
		return levelInfo
	}
	switch {
	case l >= slog.LevelError:
		return levelError
	case l >= slog.LevelWarn:
		return levelWarn
	case l >= slog.LevelInfo:
		return levelInfo
	default:
		return levelDebug
	}
}

// logDigest is what show knows of logs.jsonl: the records per level and
// the last WARN and ERROR records.
type logDigest struct {
	records int64
	levels  [numLevels]int64
	// alerts are the last maxLogAlerts WARN and ERROR records, a ring
	// whose oldest item is at next once it is full; alertsSeen counts
	// them all.
	alerts     []logRow
	next       int
	alertsSeen int64
}

// logRow is one WARN or ERROR record, with its line for its attrs.
type logRow struct {
	ts                time.Time
	level             int
	source, step, msg string
	line              []byte
}

// lastAlerts returns the kept WARN and ERROR records, oldest first.
func (l *logDigest) lastAlerts() []logRow {
	return append(slices.Clone(l.alerts[l.next:]), l.alerts[:l.next]...)
}

// sampler keeps an evenly spread sample of at most max items of a stream
// of unknown length: every stride-th item, the stride doubling (and every
// other kept item dropped) each time the sample would outgrow max. The
// result is deterministic, which golden tests and reproducible reports
// need, unlike a random reservoir.
type sampler[T any] struct {
	max    int
	stride int64
	n      int64 // items offered
	items  []T
	seen   []int64 // the offer index of each item
}

// want reports whether the next offered item will be kept; callers that
// build an item at a cost ask first.
func (s *sampler[T]) want() bool {
	if s.stride == 0 {
		s.stride = 1
	}
	return s.n%s.stride == 0
}

// add offers an item; it must follow want, and the item is kept when want
// said so (callers pass a zero value otherwise, and it is not kept).
func (s *sampler[T]) add(keep bool, v T) {
	i := s.n
	s.n++
	if !keep {
		return
	}
	s.items = append(s.items, v)
	s.seen = append(s.seen, i)
	if len(s.items) <= s.max {
		return
	}
	s.stride *= 2
	j := 0
	for k := range s.items {
		if s.seen[k]%s.stride == 0 {
			s.items[j], s.seen[j] = s.items[k], s.seen[k]
			j++
		}
	}
	clear(s.items[j:])
	s.items, s.seen = s.items[:j], s.seen[:j]
}

// readSession reads dir's status.json and digests its events and metrics.
// status.json is decoded into host.Status, so its format has one
// definition; fields this program does not know are ignored, as are
// missing log files (a run that failed before its first record).
func readSession(dir string) (*session, error) {
	s := &session{dir: dir, steps: map[string]*stepTimes{},
		eventIdx: map[kindKey]*eventKind{}, seriesAt: map[kindKey]*series{}}
	b, err := os.ReadFile(filepath.Join(dir, host.StatusFile))
	if err != nil {
		return nil, fmt.Errorf("%s is not a session directory: %w", dir, err)
	}
	if err := json.Unmarshal(b, &s.status); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, host.StatusFile), err)
	}
	if err := s.readLines(filepath.Join(dir, logsink.EventsFile), s.addEvent); err != nil {
		return nil, err
	}
	if err := s.readLines(filepath.Join(dir, logsink.MetricsFile), s.addMetric); err != nil {
		return nil, err
	}
	logs := filepath.Join(dir, logsink.LogsFile)
	if _, err := os.Stat(logs); err == nil {
		s.logs = &logDigest{}
		if err := s.readLines(logs, s.addLog); err != nil {
			return nil, err
		}
	}
	// status.json's start is Prepare's, a little before run_start.
	if st := s.status.StartedAt; !st.IsZero() && (s.runStart.IsZero() || st.Before(s.runStart)) {
		s.runStart = st
	}
	if s.status.FinishedAt.After(s.runEnd) {
		s.runEnd = s.status.FinishedAt
	}
	return s, nil
}

// record is the part of a line of events.jsonl or metrics.jsonl that is
// decoded for every line; an event's data is decoded only for the events
// a report embeds.
type record struct {
	TS           time.Time `json:"ts"`
	Seq          int64     `json:"seq"`
	Event        string    `json:"event"`
	Metric       string    `json:"metric"`
	Source       string    `json:"source"`
	StepID       string    `json:"step_id"`
	Value        *float64  `json:"value"`
	ValueInvalid string    `json:"value_invalid"`
	Unit         string    `json:"unit"`
	Level        string    `json:"level"` // a log record's
	Msg          string    `json:"msg"`   // a log record's

	// The fields of lifecycle events the digest uses. A driver's event
	// may hold fields of these names with other types, hence any.
	Phase      any `json:"phase"`
	DurationMS any `json:"duration_ms"`
	Message    any `json:"message"`
}

// readLines calls add for each line of a JSONL file. A final line without
// its newline is a record being written (show -f reads live sessions): it
// is used only when it decodes.
func (s *session) readLines(path string, add func(line []byte, r *record)) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line over the buffer: rare (a huge event), so copy.
			full := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			var r record
			var te *json.UnmarshalTypeError
			if derr := json.Unmarshal(line, &r); derr != nil && !errors.As(derr, &te) {
				if err == io.EOF {
					return nil // a partial last line
				}
				return fmt.Errorf("%s:%d: %w", path, n, derr)
			}
			add(line, &r)
		}
		if err == io.EOF {
			return nil
		}
	}
}

func (s *session) step(id string) *stepTimes {
	st := s.steps[id]
	if st == nil {
		st = &stepTimes{}
		s.steps[id] = st
	}
	return st
}

func (s *session) addEvent(line []byte, r *record) {
	s.events++
	if r.TS.After(s.runEnd) {
		s.runEnd = r.TS
	}
	switch r.Event {
	case "run_start":
		s.runStart = r.TS
	case "phase_complete":
		ms, _ := r.DurationMS.(float64)
		d := time.Duration(ms * float64(time.Millisecond))
		s.phases = append(s.phases, span{name: fmt.Sprint(r.Phase), start: r.TS.Add(-d), end: r.TS})
	case "step_start":
		s.step(r.StepID).start = r.TS
	case "step_complete":
		s.step(r.StepID).end = r.TS
	case "step_failed":
		st := s.step(r.StepID)
		st.end = r.TS
		if m, ok := r.Message.(string); ok {
			st.message = m
		}
	}
	k := kindKey{r.StepID, r.Event}
	ek := s.eventIdx[k]
	if ek == nil {
		if len(s.eventKinds) >= maxKinds {
			s.otherEvents++
			return
		}
		ek = &eventKind{kindKey: k, sample: sampler[eventRow]{max: eventsPerKind}}
		s.eventIdx[k] = ek
		s.eventKinds = append(s.eventKinds, ek)
	}
	ek.count++
	keep := ek.sample.want()
	var row eventRow
	if keep {
		row = eventRow{Seq: r.Seq, TS: r.TS, Step: r.StepID, Name: r.Event, Source: r.Source, Data: eventData(line)}
	}
	ek.sample.add(keep, row)
}

// eventData is an event line's data: its fields other than the line's own,
// as a JSON object of at most about maxDataBytes (longer values cut).
func eventData(line []byte) json.RawMessage {
	var m map[string]any
	if json.Unmarshal(line, &m) != nil {
		return nil
	}
	for _, k := range []string{"ts", "seq", "session", "event", "source", "step_id"} {
		delete(m, k)
	}
	if len(m) == 0 {
		return nil
	}
	for k, v := range m {
		if str, ok := v.(string); ok && len(str) > 120 {
			m[k] = str[:120] + "…"
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	for len(b) > maxDataBytes && len(m) > 0 {
		// Drop the largest fields until it fits, saying so.
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		longest, size := "", -1
		for _, k := range keys {
			vb, _ := json.Marshal(m[k])
			if len(vb) > size && k != "…" {
				longest, size = k, len(vb)
			}
		}
		delete(m, longest)
		m["…"] = "fields cut"
		b, _ = json.Marshal(m)
		if longest == "" {
			break
		}
	}
	return b
}

func (s *session) addMetric(_ []byte, r *record) {
	s.metrics++
	if r.TS.After(s.runEnd) {
		s.runEnd = r.TS
	}
	k := kindKey{r.StepID, r.Metric}
	ser := s.seriesAt[k]
	if ser == nil {
		if len(s.series) >= maxKinds {
			s.otherPoints++
			return
		}
		ser = &series{kindKey: k, unit: r.Unit, min: math.Inf(1), max: math.Inf(-1),
			sample: sampler[point]{max: pointsPerSeries}}
		s.seriesAt[k] = ser
		s.series = append(s.series, ser)
	}
	if r.Value == nil {
		ser.invalid++
		return
	}
	v := *r.Value
	ser.count++
	ser.sum += v
	ser.min, ser.max, ser.last = min(ser.min, v), max(ser.max, v), v
	keep := ser.sample.want()
	ser.sample.add(keep, point{r.TS, v})
}

// addLog counts a line of logs.jsonl by level and keeps it when it is a
// WARN or ERROR record, among the last maxLogAlerts.
func (s *session) addLog(line []byte, r *record) {
	l := s.logs
	l.records++
	level := logLevel(r.Level)
	l.levels[level]++
	if level < levelWarn {
		return
	}
	l.alertsSeen++
	row := logRow{ts: r.TS, level: level, source: r.Source, step: r.StepID, msg: r.Msg, line: bytes.Clone(line)}
	if len(l.alerts) < maxLogAlerts {
		l.alerts = append(l.alerts, row)
		return
	}
	l.alerts[l.next] = row
	l.next = (l.next + 1) % maxLogAlerts
}

// stepError is the error a step failed with: its step_failed message, else
// the run's failure reason when the failure names the step.
func (s *session) stepError(id string) string {
	if st := s.steps[id]; st != nil && st.message != "" {
		return st.message
	}
	if f := s.status.Failure; f != nil && f.StepID == id {
		return f.Reason
	}
	return ""
}
