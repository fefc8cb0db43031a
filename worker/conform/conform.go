package conform

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/transport"
)

// DefaultTimeout bounds each check when no Timeout option is given: every
// wait of the check, from the worker's start to its exit, ends by then.
const DefaultTimeout = 10 * time.Second

// Check describes one check of the kit.
type Check struct {
	// Name is the check's short name, e.g. "cancel_running".
	Name string
	// Section lists the sections of docs/protocol.md the check enforces,
	// e.g. "§8".
	Section string
	// Doc says in one line what the check does.
	Doc string
}

// Checks returns every check of the kit, in the order Run runs them.
func Checks() []Check {
	out := make([]Check, len(checks))
	for i, c := range checks {
		out[i] = c.Check
	}
	return out
}

// Result is the outcome of one check.
type Result struct {
	// Check is the check's name.
	Check string
	// Section lists the sections of docs/protocol.md the check enforces.
	Section string
	// Passed reports whether the worker passed the check.
	Passed bool
	// Skipped reports that the check did not run because the context
	// ended first; Passed is then false.
	Skipped bool
	// Detail says why the check failed or was skipped. A failure of the
	// worker starts with the section it violated: "§8: no -32800 for the
	// cancelled exec_step (id 3) within 10s"; one of the run itself (the
	// worker did not start, ctx ended) does not. Empty when it passed.
	Detail string
	// Duration is how long the check took, the worker's start and exit
	// included.
	Duration time.Duration
	// Stderr is the tail of the worker's stderr, kept when the check
	// failed (empty otherwise, and for transports that capture none).
	Stderr string
}

// String is the result's line in the kit's report: "PASS  handshake
// (12ms)" or "FAIL  cancel_running  §8: no -32800 within 10s  (10.01s)".
func (r Result) String() string {
	d := r.Duration.Round(time.Millisecond)
	switch {
	case r.Passed:
		return fmt.Sprintf("PASS  %s  (%v)", r.Check, d)
	case r.Skipped:
		return fmt.Sprintf("SKIP  %s  %s", r.Check, r.Detail)
	default:
		return fmt.Sprintf("FAIL  %s  %s  (%v)", r.Check, r.Detail, d)
	}
}

// Report is the outcome of a Run: one Result per check run, in order.
type Report struct {
	// Results holds the checks' results in the order they ran.
	Results []Result
}

// Failed returns the names of the checks that failed (not those skipped),
// in the order they ran.
func (r *Report) Failed() []string {
	var out []string
	for _, res := range r.Results {
		if !res.Passed && !res.Skipped {
			out = append(out, res.Check)
		}
	}
	return out
}

// OK reports whether every check ran and passed.
func (r *Report) OK() bool {
	for _, res := range r.Results {
		if !res.Passed {
			return false
		}
	}
	return true
}

// Summary is the report's last line: "27 checks: 25 passed, 2 failed",
// with ", 1 skipped" when some did not run.
func (r *Report) Summary() string {
	var passed, failed, skipped int
	for _, res := range r.Results {
		switch {
		case res.Passed:
			passed++
		case res.Skipped:
			skipped++
		default:
			failed++
		}
	}
	s := fmt.Sprintf("%d checks: %d passed, %d failed", len(r.Results), passed, failed)
	if skipped > 0 {
		s += fmt.Sprintf(", %d skipped", skipped)
	}
	return s
}

// An Option configures Run and Test.
type Option func(*config)

type config struct {
	timeout  time.Duration
	maxFrame int
	match    func(name string) bool
	progress func(Result)
}

func newConfig(opts []Option) *config {
	c := &config{timeout: DefaultTimeout, maxFrame: tproxy.DefaultMaxFrameSize}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Timeout bounds each check: the worker's start, every wait for a frame,
// and its exit. A check still waiting then fails saying what it waited
// for. Zero or less means DefaultTimeout.
func Timeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// MaxFrameSize is the worker's frame cap in bytes (§2): the oversize_frame
// check sends a line one byte longer, and the kit refuses lines from the
// worker over it. Zero or less means tproxy.DefaultMaxFrameSize.
func MaxFrameSize(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxFrame = n
		}
	}
}

// Select runs only the checks whose name match accepts.
func Select(match func(name string) bool) Option {
	return func(c *config) { c.match = match }
}

// Progress calls f with each check's result as soon as the check ends,
// from the goroutine that called Run.
func Progress(f func(Result)) Option {
	return func(c *config) { c.progress = f }
}

// selected returns the checks cfg selects.
func (cfg *config) selected() []check {
	var out []check
	for _, c := range checks {
		if cfg.match == nil || cfg.match(c.Name) {
			out = append(out, c)
		}
	}
	return out
}

// Run runs the selected checks against workers started by t, one after
// another, each with a fresh worker, and reports the results. Every worker
// it starts is closed before Run returns. When ctx ends, the check running
// fails and the rest are skipped.
func Run(ctx context.Context, t transport.Transport, opts ...Option) *Report {
	cfg := newConfig(opts)
	rep := &Report{}
	for _, c := range cfg.selected() {
		var res Result
		if err := ctx.Err(); err != nil {
			res = Result{Check: c.Name, Section: c.Section, Skipped: true, Detail: "not run: " + err.Error()}
		} else {
			res = runCheck(ctx, t, cfg, c)
		}
		rep.Results = append(rep.Results, res)
		if cfg.progress != nil {
			cfg.progress(res)
		}
	}
	return rep
}

// sections formats a check's sections for Check.Section.
func sections(s ...string) string { return strings.Join(s, ", ") }
