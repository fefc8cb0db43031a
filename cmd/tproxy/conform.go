package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker/conform"
)

const conformUsage = `usage: tproxy conform [flags] -- command [arg...]

Checks that a tproxy worker, written in any language, speaks the wire
protocol of docs/protocol.md: runs the conformance kit (package
github.com/tproxy/tproxy/worker/conform) against the worker that command
starts, once per check. The command may be any program whose stdin and
stdout end up at the worker's (ssh, docker exec, kubectl exec), started
with this program's environment. The worker must register the
conformance drivers of §13. Besides its own assertions, every check judges
every line the worker writes against §2, §3 and §6.

One line per check as it ends, then a summary:

  PASS  handshake       (31ms)
  FAIL  cancel_running  §8: no -32800 for the cancelled exec_step (id 3) within 10s  (10.02s)
  28 checks: 27 passed, 1 failed

Exit status: 0 when every check passed, 1 when one failed (or the run was
interrupted), 2 for a usage error such as no command.

Flags:
`

// conformCmd is "tproxy conform".
func conformCmd(ctx context.Context, args []string, e *env) int {
	fs := flagSet("conform", conformUsage, e)
	list := fs.Bool("list", false, "print the checks with the sections of docs/protocol.md they enforce, and exit")
	runRE := fs.String("run", "", "run only the checks whose name matches this regular `regexp`")
	timeout := fs.Duration("timeout", conform.DefaultTimeout, "bound on each check")
	maxFrame := fs.Int("max-frame", tproxy.DefaultMaxFrameSize, "the worker's frame cap in `bytes`")
	verbose := fs.Bool("v", false, "print the tail of the worker's stderr under each failed check")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *timeout <= 0 {
		return usageError(fs, e, "-timeout must be positive")
	}
	if *maxFrame <= 0 {
		return usageError(fs, e, "-max-frame must be positive")
	}
	re, err := regexp.Compile(*runRE)
	if err != nil {
		return usageError(fs, e, "-run: %v", err)
	}
	var checks []conform.Check
	for _, c := range conform.Checks() {
		if re.MatchString(c.Name) {
			checks = append(checks, c)
		}
	}
	if len(checks) == 0 {
		return usageError(fs, e, "-run %q matches no check; -list lists them", *runRE)
	}

	if *list {
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		for _, c := range checks {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, c.Section, c.Doc)
		}
		tw.Flush()
		return exitOK
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usageError(fs, e, "no command to start the worker")
	}

	width := 0
	for _, c := range checks {
		width = max(width, len(c.Name))
	}
	// Command inherits this program's environment, as ssh or docker exec
	// would need.
	tr := transport.Command(argv[0], argv[1:]...)
	// The kit has already waited for the worker's output to end when it
	// closes a worker, and eof_exit judges the exit on end of input: a
	// worker that lingers after the other checks need not cost each of
	// them the default ladder's 5s+3s.
	tr.CloseTimeout, tr.TermTimeout = 2*time.Second, 2*time.Second
	var worker transport.Transport = tr
	if wrapTransport != nil {
		worker = wrapTransport("conform", tr)
	}
	rep := conform.Run(ctx, worker,
		conform.Select(re.MatchString),
		conform.Timeout(*timeout),
		conform.MaxFrameSize(*maxFrame),
		conform.Progress(func(r conform.Result) {
			fmt.Fprintln(e.stdout, conformLine(r, width))
			if *verbose && !r.Passed && !r.Skipped && r.Stderr != "" {
				fmt.Fprintf(e.stdout, "      the worker's stderr ended with:\n%s\n", indent(r.Stderr, "      | "))
			}
		}))
	fmt.Fprintln(e.stdout, rep.Summary())
	if !rep.OK() {
		return exitFail
	}
	return exitOK
}

// conformLine is a result's line, the names padded to width so that the
// details line up.
func conformLine(r conform.Result, width int) string {
	d := r.Duration.Round(time.Millisecond)
	switch {
	case r.Passed:
		return fmt.Sprintf("PASS  %-*s  (%v)", width, r.Check, d)
	case r.Skipped:
		return fmt.Sprintf("SKIP  %-*s  %s", width, r.Check, r.Detail)
	default:
		return fmt.Sprintf("FAIL  %-*s  %s  (%v)", width, r.Check, r.Detail, d)
	}
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	s = strings.TrimRight(s, "\n")
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}
