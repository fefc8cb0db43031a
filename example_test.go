package tproxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// The whole picture in one process: a worker with one driver, a host that
// drives it over the in-memory transport, and the events the step streamed
// back, in order. Swap the transport for a transport.Subprocess running
// the same worker through worker.Main and nothing else changes.
func Example() {
	w := worker.New("counter", "1.0.0")
	w.Logger = slog.New(slog.DiscardHandler)
	w.RegisterFunc("count", func(ctx context.Context, s *worker.Step) error {
		var cfg struct {
			N int `json:"n"`
		}
		if err := s.DecodeConfig(&cfg); err != nil {
			return err
		}
		for i := range cfg.N {
			if err := s.Event("counted", map[string]any{"i": i}); err != nil {
				return err
			}
		}
		s.SetRows(int64(cfg.N))
		return nil
	})

	ctx := context.Background()
	sink := &logsink.Memory{}
	c, err := host.Start(ctx, &transport.InMemory{Serve: w.Serve}, host.WithSink(sink))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	manifest := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "count-1", Driver: "count"}}}
	if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "run_1", Manifest: manifest}); err != nil {
		fmt.Println(err)
		return
	}
	res, err := c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "count-1", Driver: "count", Config: map[string]any{"n": 2}})
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := c.Cleanup(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("rows:", res.RowsProcessed)
	for _, e := range sink.Events() {
		fmt.Println(strings.TrimSpace(e.Name + " " + e.StepID))
	}
	// Output:
	// rows: 2
	// session_initialized
	// step_start count-1
	// counted count-1
	// counted count-1
	// step_complete count-1
	// session_cleanup
}

// A Stream reads and writes one JSON message per line, whatever chunks the
// bytes arrive in, and refuses a frame over its cap with an error that
// quotes the frame's start.
func ExampleStream() {
	var wire strings.Builder
	out := tproxy.NewStream(nopCloser{&wire}, 0)
	out.WriteObject(map[string]any{"jsonrpc": "2.0", "method": "ping", "id": 1})
	fmt.Print(wire.String())

	in := tproxy.NewStream(nopCloser{strings.NewReader(`{"jsonrpc":"2.0","id":1,"result":{}}` + "\n" +
		`{"jsonrpc":"2.0","method":"event","params":{"name":"` + strings.Repeat("x", 100) + `"}}` + "\n")}, 64)
	frame, err := in.ReadFrame()
	fmt.Printf("%s %v\n", frame, err)
	_, err = in.ReadFrame()
	fmt.Println(errors.Is(err, tproxy.ErrFrameTooLarge))
	fmt.Println(err)
	// Output:
	// {"id":1,"jsonrpc":"2.0","method":"ping"}
	// {"jsonrpc":"2.0","id":1,"result":{}} <nil>
	// true
	// tproxy: read frame: frame too large (155 bytes, cap 64); starts "{\"jsonrpc\":\"2.0\",\"method\":\"event\",\"params\":{\"name\":\"xxxxxxxxxxxx"...
}

type nopCloser struct{ any }

func (n nopCloser) Read(p []byte) (int, error) {
	if r, ok := n.any.(io.Reader); ok {
		return r.Read(p)
	}
	return 0, io.EOF
}

func (n nopCloser) Write(p []byte) (int, error) {
	if w, ok := n.any.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, io.ErrClosedPipe
}

func (nopCloser) Close() error { return nil }
