package logsink_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

func ExampleOpenDir() {
	dir, err := os.MkdirTemp("", "session")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	files, err := logsink.OpenDir(dir, "run_42")
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	files.Event(ctx, tproxy.Event{Name: "step_start", Timestamp: at, StepID: "extract"})
	files.Metric(ctx, tproxy.Metric{Name: "rows_processed", Value: 42, Timestamp: at.Add(time.Second), StepID: "extract", Unit: "rows"})
	files.Event(ctx, tproxy.Event{Name: "step_complete", Timestamp: at.Add(1500 * time.Millisecond), StepID: "extract",
		Data: map[string]any{"rows": 42, "output": "users"}})
	if err := files.Close(); err != nil {
		panic(err)
	}

	for _, name := range []string{logsink.EventsFile, logsink.MetricsFile} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		fmt.Printf("%s:\n%s", name, b)
	}
	// Output:
	// events.jsonl:
	// {"ts":"2025-03-01T12:00:00Z","seq":1,"session":"run_42","event":"step_start","step_id":"extract"}
	// {"ts":"2025-03-01T12:00:01.5Z","seq":3,"session":"run_42","event":"step_complete","step_id":"extract","output":"users","rows":42}
	// metrics.jsonl:
	// {"ts":"2025-03-01T12:00:01Z","seq":2,"session":"run_42","metric":"rows_processed","value":42,"step_id":"extract","unit":"rows"}
}

func ExampleConsole() {
	ctx := context.Background()
	c := logsink.NewConsole(os.Stdout)
	c.Event(ctx, tproxy.Event{Name: "session_initialized"})
	c.Metric(ctx, tproxy.Metric{Name: "steps_total", Value: 3})
	c.Event(ctx, tproxy.Event{Name: "step_start", StepID: "step-1"})
	c.Metric(ctx, tproxy.Metric{Name: "rows_processed", Value: 42, StepID: "step-1", Unit: "rows"})
	c.Event(ctx, tproxy.Event{Name: "step_complete", StepID: "step-1", Data: map[string]any{"rows": 42, "duration_ms": 12}})
	// Output:
	//    📊 Event: session_initialized
	//    📈 Metric: steps_total = 3
	//    📊 Event: step_start step=step-1
	//    📈 Metric: rows_processed = 42 rows step=step-1
	//    📊 Event: step_complete step=step-1 duration_ms=12 rows=42
}

func ExampleMulti() {
	ctx := context.Background()
	var mem logsink.Memory
	sink := logsink.Multi(&mem, logsink.NewConsole(os.Stdout))
	sink.Event(ctx, tproxy.Event{Name: "run_start"})
	sink.Metric(ctx, tproxy.Metric{Name: "steps_total", Value: 3})
	fmt.Println(len(mem.Events()), "event,", len(mem.Metrics()), "metric kept")
	// Output:
	//    📊 Event: run_start
	//    📈 Metric: steps_total = 3
	// 1 event, 1 metric kept
}
