package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// A worker binary's main is one line: worker.Main serves the protocol on
// stdin/stdout until the host closes stdin, with stdout moved to stderr so
// that a driver's prints cannot corrupt the protocol.
func ExampleMain() {
	w := worker.New("my-pipeline-worker", "0.3.0")
	w.RegisterFunc("extract", func(ctx context.Context, s *worker.Step) error {
		s.SetRows(42)
		return nil
	})
	if false { // in a real binary: no condition
		worker.Main(w)
	}
}

// Drivers are unit-tested without a process: serve the worker over the
// in-memory transport and drive it with the host client, exactly as the
// orchestrator would over a subprocess. Here a transform step reads the
// output an earlier step kept in the worker.
func ExampleWorker_RegisterFunc() {
	w := worker.New("wordcount", "1.0.0")
	w.Logger = slog.New(slog.DiscardHandler)
	w.RegisterFunc("split", func(ctx context.Context, s *worker.Step) error {
		text, _ := s.Config()["text"].(string)
		words := strings.Fields(text)
		s.SetOutput("words", words)
		s.SetRows(int64(len(words)))
		return s.Metric("words_split", float64(len(words)), worker.Unit("words"))
	})
	w.RegisterFunc("count", func(ctx context.Context, s *worker.Step) error {
		in, _ := s.Input("words")
		words, _ := in.([]string)
		seen := map[string]bool{}
		for _, w := range words {
			seen[strings.ToLower(w)] = true
		}
		return s.Event("distinct_words", map[string]any{"n": len(seen)})
	})

	ctx := context.Background()
	sink := &logsink.Memory{}
	c, err := host.Start(ctx, &transport.InMemory{Serve: w.Serve}, host.WithSink(sink))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{
		{ID: "split", Driver: "split"},
		{ID: "count", Driver: "count", Needs: []string{"split"}},
	}}
	if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "test", Manifest: m}); err != nil {
		fmt.Println(err)
		return
	}
	split, err := c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "split", Driver: "split",
		Config: map[string]any{"text": "the quick fox jumps over the lazy dog The End"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("split rows:", split.RowsProcessed)
	_, err = c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "count", Driver: "count",
		Inputs: map[string]tproxy.InputRef{"words": {FromStep: "split", Key: "words"}}})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range sink.Events() {
		if e.Name == "distinct_words" {
			fmt.Println("distinct:", e.Data["n"])
		}
	}
	for _, m := range sink.Metrics() {
		if m.Name == "words_split" {
			fmt.Println(m.Name, m.Value, m.Unit)
		}
	}
	// Output:
	// split rows: 10
	// distinct: 8
	// words_split 10 words
}
