// Command tproxy-conform checks that a tproxy worker, written in any
// language, speaks the wire protocol of docs/protocol.md: it runs the
// conformance kit of package github.com/tproxy/tproxy/worker/conform
// against a command that starts the worker.
//
// Usage:
//
//	tproxy-conform [flags] -- command [arg...]
//
// For example:
//
//	go run github.com/tproxy/tproxy/cmd/tproxy-conform -- python3 my_worker.py
//	go run github.com/tproxy/tproxy/cmd/tproxy-conform -run 'cancel|heartbeats' -v -- ./my-worker
//
// The command is started once per check, through transport.Command (as
// with ssh, docker exec or kubectl exec, it may be any program whose stdin
// and stdout end up at the worker's), with this program's environment. The
// worker must register the conformance drivers of docs/protocol.md §13.
// Besides its own assertions, every check judges every line the worker
// writes: a JSON-RPC 2.0 message (§2, §3), notifications of the shape of
// §6, responses only to requests the kit sent.
//
// It prints one line per check as it ends, then a summary:
//
//	PASS  handshake       (31ms)
//	FAIL  cancel_running  §8: no -32800 for the cancelled exec_step (id 3) within 10s  (10.02s)
//	28 checks: 27 passed, 1 failed
//
// The flags are:
//
//	-list         print the checks, the sections of docs/protocol.md each
//	              enforces and what it does, and exit
//	-run REGEXP   run only the checks whose name matches REGEXP
//	-timeout D    bound on each check (default 10s)
//	-max-frame N  the worker's frame cap in bytes (default 16777216)
//	-v            print the tail of the worker's stderr under a failed check
//
// The exit status is 0 when every check passed, 1 when one failed (or the
// run was interrupted), and 2 for a usage error, such as no command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker/conform"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: tproxy-conform [flags] -- command [arg...]

Runs the tproxy conformance kit (docs/protocol.md §13) against the worker
that command starts, once per check; the worker must register the
conformance drivers. Besides its own assertions, every check judges every
line the worker writes against §2, §3 and §6.

Flags:
`

// run is the whole program; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tproxy-conform", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	list := fs.Bool("list", false, "print the checks with the sections of docs/protocol.md they enforce, and exit")
	runRE := fs.String("run", "", "run only the checks whose name matches this regular `regexp`")
	timeout := fs.Duration("timeout", conform.DefaultTimeout, "bound on each check")
	maxFrame := fs.Int("max-frame", tproxy.DefaultMaxFrameSize, "the worker's frame cap in `bytes`")
	verbose := fs.Bool("v", false, "print the tail of the worker's stderr under each failed check")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "tproxy-conform: "+format+"\n", a...)
		fs.Usage()
		return 2
	}
	if *timeout <= 0 {
		return usageErr("-timeout must be positive")
	}
	if *maxFrame <= 0 {
		return usageErr("-max-frame must be positive")
	}
	re, err := regexp.Compile(*runRE)
	if err != nil {
		return usageErr("-run: %v", err)
	}
	var checks []conform.Check
	for _, c := range conform.Checks() {
		if re.MatchString(c.Name) {
			checks = append(checks, c)
		}
	}
	if len(checks) == 0 {
		return usageErr("-run %q matches no check; -list lists them", *runRE)
	}

	if *list {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		for _, c := range checks {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, c.Section, c.Doc)
		}
		tw.Flush()
		return 0
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usageErr("no command to start the worker")
	}

	width := 0
	for _, c := range checks {
		width = max(width, len(c.Name))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Env nil: the worker inherits this program's environment.
	tr := transport.Command(argv[0], argv[1:]...)
	// The kit has already waited for the worker's output to end when it
	// closes a worker, and eof_exit judges the exit on end of input: a
	// worker that lingers after the other checks need not cost each of
	// them the default ladder's 5s+3s.
	tr.CloseTimeout, tr.TermTimeout = 2*time.Second, 2*time.Second
	rep := conform.Run(ctx, tr,
		conform.Select(re.MatchString),
		conform.Timeout(*timeout),
		conform.MaxFrameSize(*maxFrame),
		conform.Progress(func(r conform.Result) {
			fmt.Fprintln(stdout, line(r, width))
			if *verbose && !r.Passed && !r.Skipped && r.Stderr != "" {
				fmt.Fprintf(stdout, "      the worker's stderr ended with:\n%s\n", indent(r.Stderr, "      | "))
			}
		}))
	fmt.Fprintln(stdout, rep.Summary())
	if !rep.OK() {
		return 1
	}
	return 0
}

// line is a result's line, the names padded to width so that the details
// line up.
func line(r conform.Result, width int) string {
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

func indent(s, prefix string) string {
	s = strings.TrimRight(s, "\n")
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}
