package logsink_test

import (
	"context"
	"testing"

	"github.com/tproxy/tproxy"
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
