package logsink

import (
	"context"
	"errors"

	"github.com/tproxy/tproxy"
)

// Multi returns a Sink that writes every record to each of sinks, in order,
// e.g. Multi(files, console). A failing sink does not stop the others: the
// call returns errors.Join of the failures, nil if there were none. Nil
// sinks are skipped.
func Multi(sinks ...Sink) Sink {
	m := make(multi, 0, len(sinks))
	for _, s := range sinks {
		if s != nil {
			m = append(m, s)
		}
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
