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
// When one of sinks is a Files, a host's events reach it as parsed from
// the wire, without building each event's data map, and are decoded once,
// for the other sinks.
func Multi(sinks ...Sink) Sink {
	m := make(multi, 0, len(sinks))
	var raws []wire.RawFunc
	anyRaw := false
	for _, s := range sinks {
		if s != nil {
			m = append(m, s)
			raw, ok := wire.RawOf(s)
			raws = append(raws, raw)
			anyRaw = anyRaw || ok
		}
	}
	if anyRaw {
		return multiRaw{m, raws}
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

func (m multi) Log(ctx context.Context, r tproxy.LogRecord) error {
	var errs []error
	for _, s := range m {
		if err := s.Log(ctx, r); err != nil {
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

// multiRaw is multi with a sink that takes raw events among its sinks;
// raws[i] is sink i's raw entry point, or nil.
type multiRaw struct {
	multi
	raws []wire.RawFunc
}

func (m multiRaw) EventRaw(ctx context.Context, e *wire.RawEvent) error {
	var (
		errs    []error
		ev      tproxy.Event
		decoded bool
	)
	for i, s := range m.multi {
		var err error
		if raw := m.raws[i]; raw != nil {
			err = raw(ctx, e)
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
