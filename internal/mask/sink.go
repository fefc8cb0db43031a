package mask

import (
	"bytes"
	"context"
	"fmt"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/logsink"
)

// Sink returns a logsink.Sink that masks m's secrets in every event and metric
// before passing it to next: in every string a worker controls (names,
// step ids, units, data and tag keys and values, nested values; see
// Masker's Event and Metric). A nil m masks nothing.
//
// When next takes raw events (wire.RawOf), so does the Sink returned, and
// an event that has nothing to mask reaches next's as it was parsed. Any
// other event is decoded, masked and given to next's Event: the fast path
// is taken only where masking could not change anything.
func Sink(next logsink.Sink, m *Masker) logsink.Sink {
	if m == nil {
		return next
	}
	s := maskSink{next: next, m: m}
	if raw, ok := wire.RawOf(next); ok {
		return maskRawSink{maskSink: s, raw: raw}
	}
	return s
}

type maskSink struct {
	next logsink.Sink
	m    *Masker
}

func (s maskSink) Event(ctx context.Context, e tproxy.Event) error {
	return s.next.Event(ctx, s.m.Event(e))
}

func (s maskSink) Metric(ctx context.Context, m tproxy.Metric) error {
	return s.next.Metric(ctx, s.m.Metric(m))
}

func (s maskSink) Log(ctx context.Context, r tproxy.LogRecord) error {
	return s.next.Log(ctx, s.m.LogRecord(r))
}

func (s maskSink) Flush() error { return s.next.Flush() }

// maskRawSink is maskSink in front of a sink that takes raw events.
type maskRawSink struct {
	maskSink
	raw wire.RawFunc
}

var _ wire.RawSink = maskRawSink{}

func (s maskRawSink) EventRaw(ctx context.Context, e *wire.RawEvent) error {
	if !s.mayMask(e) {
		return s.raw(ctx, e)
	}
	ev, err := e.Event()
	if err != nil {
		return fmt.Errorf("masking: %s", s.m.String(err.Error()))
	}
	return s.next.Event(ctx, s.m.Event(ev))
}

// mayMask reports whether masking e could change it. It errs towards
// yes: a data value whose JSON text holds an escape or an object is not
// looked into (an escape can spell a secret, an object can hold a secret
// key), and a secret's form found anywhere in a value's text counts, even
// across JSON's punctuation.
func (s maskRawSink) mayMask(e *wire.RawEvent) bool {
	if s.m.String(e.Name) != e.Name || s.m.String(e.StepID) != e.StepID {
		return true
	}
	for _, f := range e.Data {
		if s.m.SecretKey(f.Key) || s.m.String(f.Key) != f.Key ||
			bytes.IndexByte(f.Value, '\\') >= 0 || bytes.IndexByte(f.Value, '{') >= 0 {
			return true
		}
		// MaskPrefix returns the very bytes it is given when nothing in
		// them is secret, and it does not copy them to find out.
		if masked, _ := s.m.MaskPrefix(f.Value, true); len(masked) != len(f.Value) ||
			len(masked) > 0 && &masked[0] != &f.Value[0] {
			return true
		}
	}
	return false
}
