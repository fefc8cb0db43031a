package host_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/transport"
)

// RunMany runs many sessions at once, each with its own worker and its own
// session directory, and sums them up.
func ExampleRunMany() {
	base, _ := os.MkdirTemp("", "example-many-")
	defer os.RemoveAll(base)
	w := demo.NewWorker()
	w.Logger = slog.New(slog.DiscardHandler)
	tr := &transport.InMemory{Serve: w.Serve} // a new worker per session

	var jobs []host.Job
	for i, rows := range []int{10, 20, 0, 40} { // 0 rows: extract refuses
		m := demo.Manifest()
		m.Steps[0].Config = map[string]any{"rows": rows}
		jobs = append(jobs, host.Job{Transport: tr, Spec: host.RunSpec{
			Dir: filepath.Join(base, fmt.Sprint(i)), Manifest: m, Options: quiet()}})
	}
	sum, err := host.RunMany(context.Background(), jobs, 2)
	for _, r := range sum.Results {
		fmt.Println(filepath.Base(r.Dir), r.Status.Outcome, r.Status.StepsCompleted)
	}
	fmt.Println(sum.Succeeded, sum.Failed, sum.Cancelled)
	fmt.Println(err)
	// Output:
	// 0 success 3
	// 1 success 3
	// 2 failed 0
	// 3 success 3
	// 3 1 0
	// tproxy/host: 1 of 4 sessions failed, 0 cancelled: first: tproxy/host: step "extract" failed (driver): extract: config.rows must be positive, got 0
}
