package workertest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/worker"
	"github.com/tproxy/tproxy/worker/workertest"
)

// A driver is tested on its own: Run gives it a config and inputs, and
// returns what it reported and kept. In a test, pass t.Context() and fail
// the test on an unexpected error.
func ExampleRun() {
	type upperConfig struct {
		Text string `json:"text"`
	}
	upper := worker.Typed(func(ctx context.Context, s *worker.Step, cfg upperConfig) error {
		out := strings.ToUpper(cfg.Text)
		s.Event("uppercased", map[string]any{"chars": len(out)})
		s.SetOutput("text", out)
		return nil
	})

	res, err := workertest.Run(context.Background(), upper, map[string]any{"text": "hello"}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range res.Events {
		fmt.Println(e.Name, e.Data["chars"])
	}
	fmt.Println("output:", res.Outputs["text"])

	// A typo in the config fails before the step runs.
	_, err = workertest.Run(context.Background(), upper, map[string]any{"txt": "hello"}, nil)
	fmt.Println(err)

	// A failed step says what kind of failure it was.
	fail := worker.DriverFunc(func(ctx context.Context, s *worker.Step) error {
		return errors.New("no such table")
	})
	_, err = workertest.Run(context.Background(), fail, nil, nil)
	var se *host.StepError
	if errors.As(err, &se) {
		fmt.Println(se.ErrorType, se.Message)
	}
	// Output:
	// step_start <nil>
	// uppercased 5
	// step_complete <nil>
	// output: HELLO
	// tproxy: invalid manifest: step "step": config: unknown key "txt" (did you mean "text"?)
	// driver no such table
}
