package logsink_test

import (
	"context"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

func TestMemory_KeepsOrderAndCopies(t *testing.T) {
	ctx := context.Background()
	var m logsink.Memory // the zero value is ready
	data := map[string]any{"rows": 1, "nested": map[string]any{"k": "v"}, "list": []any{"a"}}
	tags := map[string]string{"table": "users"}
	m.Event(ctx, tproxy.Event{Name: "a", Timestamp: ts0, StepID: "s", Data: data})
	m.Metric(ctx, tproxy.Metric{Name: "m", Value: 2, Tags: tags, Unit: "ms"})
	m.Event(ctx, tproxy.Event{Name: "b"})
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}

	// The caller's later changes do not reach Memory.
	data["rows"] = 99
	data["nested"].(map[string]any)["k"] = "changed"
	data["list"].([]any)[0] = "changed"
	tags["table"] = "changed"

	wantEvents := []tproxy.Event{
		{Name: "a", Timestamp: ts0, StepID: "s", Data: map[string]any{"rows": 1, "nested": map[string]any{"k": "v"}, "list": []any{"a"}}},
		{Name: "b"},
	}
	wantMetrics := []tproxy.Metric{{Name: "m", Value: 2, Tags: map[string]string{"table": "users"}, Unit: "ms"}}
	check := func(t *testing.T) {
		t.Helper()
		if diff := cmp.Diff(wantEvents, m.Events()); diff != "" {
			t.Errorf("Events (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantMetrics, m.Metrics()); diff != "" {
			t.Errorf("Metrics (-want +got):\n%s", diff)
		}
	}
	check(t)

	// Nor do a reader's edits.
	evs, ms := m.Events(), m.Metrics()
	evs[0].Name = "edited"
	evs[0].Data["rows"] = 99
	evs[0].Data["nested"].(map[string]any)["k"] = "edited"
	evs[0].Data["list"].([]any)[0] = "edited"
	ms[0].Tags["table"] = "edited"
	check(t)
}

func TestMemory_Empty(t *testing.T) {
	var m logsink.Memory
	if got := m.Events(); len(got) != 0 {
		t.Errorf("Events = %v, want none", got)
	}
	if got := m.Metrics(); len(got) != 0 {
		t.Errorf("Metrics = %v, want none", got)
	}
}

func TestMemory_Concurrent(t *testing.T) {
	const writers, each = 4, 100
	ctx := context.Background()
	var m logsink.Memory
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for i := range each {
				m.Event(ctx, tproxy.Event{Name: "e", Data: map[string]any{"i": i}})
				m.Metric(ctx, tproxy.Metric{Name: "m", Value: float64(i)})
				_ = m.Events()
			}
		})
	}
	wg.Wait()
	if n, k := len(m.Events()), len(m.Metrics()); n != writers*each || k != writers*each {
		t.Errorf("got %d events, %d metrics; want %d each", n, k, writers*each)
	}
}
