package conform

import (
	"testing"

	"github.com/tproxy/tproxy/transport"
)

// Test runs the kit from a worker's own Go tests: each selected check is a
// subtest of t, named after the check, that fails with the check's detail
// and logs the tail of the worker's stderr. Workers are started by tr,
// one per check.
//
//	func TestConformance(t *testing.T) {
//		w := worker.New("my-worker", "1.0.0")
//		conform.RegisterDrivers(w)
//		conform.Test(t, &transport.InMemory{Serve: w.Serve})
//	}
func Test(t *testing.T, tr transport.Transport, opts ...Option) {
	t.Helper()
	cfg := newConfig(opts)
	for _, c := range cfg.selected() {
		t.Run(c.Name, func(t *testing.T) {
			res := runCheck(t.Context(), tr, cfg, c)
			if cfg.progress != nil {
				cfg.progress(res)
			}
			if res.Passed {
				return
			}
			if res.Stderr != "" {
				t.Logf("the worker's stderr ended with:\n%s", res.Stderr)
			}
			t.Errorf("%s (%s; docs/protocol.md %s)", res.Detail, c.Doc, c.Section)
		})
	}
}
