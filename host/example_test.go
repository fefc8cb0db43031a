package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// Start performs the ping handshake: the client knows the worker's
// protocol version and drivers before the first real call.
func ExampleStart() {
	w := worker.New("example-worker", "1.2.3")
	w.RegisterFunc("noop", func(context.Context, *worker.Step) error { return nil })

	ctx := context.Background()
	c, err := host.Start(ctx, &transport.InMemory{Serve: w.Serve})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	info := c.Worker()
	fmt.Println(info.Protocol, info.Worker.Name, info.Worker.Version, info.Worker.Drivers)
	// Output:
	// 1 example-worker 1.2.3 [noop]
}

// A step that fails in the worker is a *StepError carrying the step id,
// the error's type and its message; the session goes on.
func ExampleStepError() {
	w := worker.New("example-worker", "1.0.0")
	w.Logger = slog.New(slog.DiscardHandler)
	w.RegisterFunc("extract", func(ctx context.Context, s *worker.Step) error {
		return errors.New("source table users missing")
	})

	ctx := context.Background()
	c, err := host.Start(ctx, &transport.InMemory{Serve: w.Serve})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "extract-users", Driver: "extract"}}}
	if _, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "run_7", Manifest: m}); err != nil {
		fmt.Println(err)
		return
	}
	_, err = c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "extract-users", Driver: "extract"})

	var se *host.StepError
	if errors.As(err, &se) {
		fmt.Println("step:", se.StepID)
		fmt.Println("message:", se.Message)
	}
	res, err := c.Ping(ctx, "still there?")
	fmt.Println(res.Echo, err)
	// Output:
	// step: extract-users
	// message: source table users missing
	// still there? <nil>
}

// Call reaches a method the worker registered with worker.Handle.
func ExampleClient_Call() {
	w := worker.New("example-worker", "1.0.0")
	w.Handle("version_of", func(ctx context.Context, params json.RawMessage) (any, error) {
		return map[string]string{"duckdb": "1.1.3"}, nil
	})

	ctx := context.Background()
	c, err := host.Start(ctx, &transport.InMemory{Serve: w.Serve})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	var versions map[string]string
	if err := c.Call(ctx, "version_of", nil, &versions); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(versions["duckdb"])
	// Output:
	// 1.1.3
}
