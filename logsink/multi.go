package logsink

import (
	"context"
	"errors"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
)

// Multi returns a Sink that writes every record to each of sinks, in order,
// e.g. Multi(files, console). A failing sink does not stop the others: the
// call returns errors.Join of the failures, nil if there were none. Nil
// sinks are skipped.
//
// When one of sinks is a RawEventSink, so is the Sink Multi returns: an
// event reaches the RawEventSinks as parsed from the wire, and is decoded
// once, for the others.
func Multi(sinks ...Sink) Sink {
	m := make(multi, 0, len(sinks))
	raw := false
	for _, s := range sinks {
		if s != nil {
			m = append(m, s)
			_, ok := s.(RawEventSink)
			raw = raw || ok
		}
	}
	if raw {
		return multiRaw{m}
	}
	return m
}

type multi []Sink

func (m multi) Event(ctx context.Context, e tproxy.Event) error {
	var errs []error
	for _, s := range m {
		if err := s.Event(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m multi) Metric(ctx context.Context, mt tproxy.Metric) error {
	var errs []error
	for _, s := range m {
		if err := s.Metric(ctx, mt); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m multi) Flush() error {
	var errs []error
	for _, s := range m {
		if err := s.Flush(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// multiRaw is multi with a RawEventSink among its sinks.
type multiRaw struct{ multi }

func (m multiRaw) EventRaw(ctx context.Context, e *wire.RawEvent) error {
	var (
		errs    []error
		ev      tproxy.Event
		decoded bool
	)
	for _, s := range m.multi {
		var err error
		if rs, ok := s.(RawEventSink); ok {
			err = rs.EventRaw(ctx, e)
		} else {
			if !decoded {
				if ev, err = e.Event(); err != nil {
					return errors.Join(append(errs, err)...)
				}
				decoded = true
			}
			err = s.Event(ctx, ev)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
