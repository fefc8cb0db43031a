package logsink_test

import (
	"bufio"
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

func TestConsole_Lines(t *testing.T) {
	tests := []struct {
		name   string
		record any // tproxy.Event or tproxy.Metric
		want   string
	}{
		{"event", tproxy.Event{Name: "session_initialized", Timestamp: ts0}, "   📊 Event: session_initialized"},
		{"event with step", tproxy.Event{Name: "step_start", StepID: "extract"}, "   📊 Event: step_start step=extract"},
		{
			"event with data",
			tproxy.Event{Name: "step_complete", StepID: "extract", Data: map[string]any{
				"rows": 42, "duration_ms": 12.5, "ok": true, "none": nil,
			}},
			"   📊 Event: step_complete step=extract duration_ms=12.5 none=null ok=true rows=42",
		},
		{
			"event data quoted when not one word",
			tproxy.Event{Name: "step_failed", Data: map[string]any{
				"error": `no such table "users"`, "empty": "", "path": "/tmp/x.csv", "odd key": "a=b",
			}},
			`   📊 Event: step_failed empty="" error="no such table \"users\"" "odd key"="a=b" path=/tmp/x.csv`,
		},
		{
			"event nested and unencodable data",
			tproxy.Event{Name: "e", Data: map[string]any{"cfg": map[string]any{"b": 1, "a": []any{"x"}}, "nan": math.NaN(), "bad": badJSON{}}},
			`   📊 Event: e bad="bad value" cfg={"a":["x"],"b":1} nan=NaN`,
		},
		{
			"event data named step",
			tproxy.Event{Name: "e", StepID: "s1", Data: map[string]any{"step": "other", "a": 1}},
			"   📊 Event: e step=s1 a=1 data.step=other",
		},
		{"metric", tproxy.Metric{Name: "steps_total", Value: 3}, "   📈 Metric: steps_total = 3"},
		{
			"metric with unit, step and tags",
			tproxy.Metric{Name: "duration", Value: 0.25, Unit: "ms", StepID: "extract", Tags: map[string]string{"table": "users", "db": "main"}},
			"   📈 Metric: duration = 0.25 ms step=extract db=main table=users",
		},
		{"metric large", tproxy.Metric{Name: "m", Value: 1e21}, "   📈 Metric: m = 1e+21"},
		{"metric NaN", tproxy.Metric{Name: "m", Value: math.NaN()}, "   📈 Metric: m = NaN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			c := logsink.NewConsole(&b)
			var err error
			switch r := tt.record.(type) {
			case tproxy.Event:
				err = c.Event(context.Background(), r)
			case tproxy.Metric:
				err = c.Metric(context.Background(), r)
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want+"\n", b.String()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestConsole_Prefix(t *testing.T) {
	var b strings.Builder
	c := logsink.NewConsole(&b)
	c.Prefix = "[s1] "
	c.Event(context.Background(), tproxy.Event{Name: "e"})
	if got, want := b.String(), "[s1] 📊 Event: e\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

func TestConsole_WriterErrors(t *testing.T) {
	boom := errors.New("boom")
	c := logsink.NewConsole(failWriter{boom})
	ctx := context.Background()
	if err := c.Event(ctx, tproxy.Event{Name: "e"}); !errors.Is(err, boom) {
		t.Errorf("Event = %v, want boom", err)
	}
	if err := c.Metric(ctx, tproxy.Metric{Name: "m"}); !errors.Is(err, boom) {
		t.Errorf("Metric = %v, want boom", err)
	}
	if err := c.Flush(); err != nil {
		t.Errorf("Flush of a writer without Flush = %v, want nil", err)
	}

	bw := bufio.NewWriter(failWriter{boom})
	c = logsink.NewConsole(bw)
	if err := c.Event(ctx, tproxy.Event{Name: "e"}); err != nil {
		t.Fatalf("buffered Event = %v", err)
	}
	if err := c.Flush(); !errors.Is(err, boom) {
		t.Errorf("Flush = %v, want boom", err)
	}
}

func TestConsole_FlushesBufferedWriter(t *testing.T) {
	var b strings.Builder
	bw := bufio.NewWriter(&b)
	c := logsink.NewConsole(bw)
	c.Event(context.Background(), tproxy.Event{Name: "e"})
	if b.Len() != 0 {
		t.Fatalf("written before Flush: %q", b.String())
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), "   📊 Event: e\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
