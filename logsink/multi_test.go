package logsink_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
)

// recorder is a Sink that records calls into a shared log and fails with err.
type recorder struct {
	name string
	log  *[]string
	err  error
}

func (r recorder) Event(_ context.Context, e tproxy.Event) error {
	*r.log = append(*r.log, r.name+" event "+e.Name)
	return r.err
}

func (r recorder) Metric(_ context.Context, m tproxy.Metric) error {
	*r.log = append(*r.log, r.name+" metric "+m.Name)
	return r.err
}

func (r recorder) Log(_ context.Context, l tproxy.LogRecord) error {
	*r.log = append(*r.log, r.name+" log "+l.Message)
	return r.err
}

func (r recorder) Flush() error {
	*r.log = append(*r.log, r.name+" flush")
	return r.err
}

func TestMulti(t *testing.T) {
	ctx := context.Background()
	var log []string
	errB, errD := errors.New("b failed"), errors.New("d failed")
	s := logsink.Multi(
		recorder{name: "a", log: &log},
		nil,
		recorder{name: "b", log: &log, err: errB},
		recorder{name: "c", log: &log},
		recorder{name: "d", log: &log, err: errD},
	)
	calls := []struct {
		name string
		call func() error
	}{
		{"Event", func() error { return s.Event(ctx, tproxy.Event{Name: "e"}) }},
		{"Metric", func() error { return s.Metric(ctx, tproxy.Metric{Name: "m"}) }},
		{"Flush", s.Flush},
	}
	for _, c := range calls {
		err := c.call()
		if !errors.Is(err, errB) || !errors.Is(err, errD) {
			t.Errorf("%s = %v, want both failures", c.name, err)
		}
		if got, want := err.Error(), "b failed\nd failed"; got != want {
			t.Errorf("%s error = %q, want %q", c.name, got, want)
		}
	}
	want := []string{
		"a event e", "b event e", "c event e", "d event e",
		"a metric m", "b metric m", "c metric m", "d metric m",
		"a flush", "b flush", "c flush", "d flush",
	}
	if diff := cmp.Diff(want, log); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestMulti_NoFailures(t *testing.T) {
	ctx := context.Background()
	var a, b logsink.Memory
	s := logsink.Multi(&a, &b)
	if err := s.Event(ctx, tproxy.Event{Name: "e"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Metric(ctx, tproxy.Metric{Name: "m"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(a.Events()) != 1 || len(b.Events()) != 1 || len(a.Metrics()) != 1 || len(b.Metrics()) != 1 {
		t.Errorf("not every sink got every record")
	}
	empty := logsink.Multi()
	if err := empty.Event(ctx, tproxy.Event{}); err != nil {
		t.Errorf("empty Multi: %v", err)
	}
}

// TestMultiPassesRawEventsOn: Multi of Files and a plain sink takes raw
// events; Files records them as parsed, the plain sink gets each one
// decoded, equal to json.Unmarshal of its params (an empty data object
// and none are the same).
func TestMultiPassesRawEventsOn(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	files, err := logsink.OpenDir(dir, "s")
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	var mem logsink.Memory
	multi := logsink.Multi(files, &mem)
	raw, ok := wire.RawOf(multi)
	if !ok {
		t.Fatal("Multi of Files and Memory takes no raw events")
	}
	if _, ok := wire.RawOf(logsink.Multi(&mem, &logsink.Memory{})); ok {
		t.Error("Multi of sinks that take no raw events claims to")
	}
	var want []tproxy.Event
	for _, params := range wiretest.OddEvents {
		var re wire.RawEvent
		if !wire.ParseEvent([]byte(params), &re) {
			continue
		}
		var e tproxy.Event
		if err := json.Unmarshal([]byte(params), &e); err != nil {
			t.Fatal(err)
		}
		want = append(want, e)
		if err := raw(ctx, &re); err != nil {
			t.Fatal(err)
		}
	}
	if len(want) < 5 {
		t.Fatalf("only %d of the odd events parse; the test needs more", len(want))
	}
	if d := cmp.Diff(want, mem.Events(), cmpopts.EquateEmpty()); d != "" {
		t.Errorf("the plain sink's events (-json.Unmarshal +got):\n%s", d)
	}
	if err := multi.Flush(); err != nil {
		t.Fatal(err)
	}
	lines, err := logsink.ReadLines(filepath.Join(dir, logsink.EventsFile))
	if err != nil || len(lines) != len(want) {
		t.Fatalf("events.jsonl has %d lines (%v), want %d", len(lines), err, len(want))
	}
}
