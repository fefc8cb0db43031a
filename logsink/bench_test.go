package logsink_test

import (
	"context"
	"testing"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/logsink"
)

func BenchmarkFiles_Event(b *testing.B) {
	f, err := logsink.OpenDir(b.TempDir(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	e := tproxy.Event{Name: "step_complete", Timestamp: ts0, StepID: "extract",
		Data: map[string]any{"rows": 42, "table": "users", "duration_ms": 12.5}}
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Event(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFiles_Metric(b *testing.B) {
	f, err := logsink.OpenDir(b.TempDir(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	m := tproxy.Metric{Name: "rows_processed", Value: 42, Timestamp: ts0, StepID: "extract", Unit: "rows",
		Tags: map[string]string{"table": "users"}}
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Metric(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFiles_EventRaw is BenchmarkFiles_Event for an event as the
// host's fast path hands it over: parsed from the wire, data still JSON.
func BenchmarkFiles_EventRaw(b *testing.B) {
	f, err := logsink.OpenDir(b.TempDir(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	var e wire.RawEvent
	params := []byte(`{"name":"step_complete","timestamp":"2026-11-27T03:28:37.392082914Z","step_id":"extract","data":{"rows":42,"table":"users","duration_ms":12.5}}`)
	raw, _ := wire.RawOf(f)
	b.ReportAllocs()
	for b.Loop() {
		if !wire.ParseEvent(params, &e) {
			b.Fatal("not parsed")
		}
		if err := raw(ctx, &e); err != nil {
			b.Fatal(err)
		}
	}
}
