// Command tproxy runs tproxy manifests from the shell and shows what a
// session did: as a terminal summary, or as one self-contained HTML
// report.
//
// Install it with:
//
//	go install github.com/tproxy/tproxy/cmd/tproxy@latest
//
// Usage:
//
//	tproxy run -worker ./bin/my-worker manifest.json   # or .yaml; a directory runs every manifest in it
//	tproxy show DIR                                    # the steps, the failure, metrics per step; -f follows
//	tproxy report DIR -o report.html                   # a timeline, events, metrics and artifacts, offline
//	tproxy conform -- python3 my_worker.py             # the conformance kit of docs/protocol.md §13
//	tproxy sweep -older-than 1h [-dry-run]             # kill orphaned tproxy sandboxes in E2B
//
// "tproxy help COMMAND" (or "tproxy COMMAND -h") describes a command's
// flags.
//
// The exit status is 0 on success, 1 when a run (or a conformance check,
// or a sweep) failed or was interrupted, and 2 for a usage error: an
// unknown command or flag, a missing argument, a manifest that cannot be
// read.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

// Exit statuses, the same for every command.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], &env{stdout: os.Stdout, stderr: os.Stderr, tty: isTerminal(os.Stdout)})
	stop()
	os.Exit(code)
}

// env is what a command may touch besides its arguments: tests pass
// buffers and choose whether stdout is a terminal.
type env struct {
	stdout, stderr io.Writer
	// tty says stdout is a terminal: progress may redraw a line with ANSI
	// escapes. Otherwise every line is plain and final.
	tty bool
}

// command is a subcommand: its one-line summary for the top-level usage,
// and the function that runs it and returns the exit status.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, e *env) int
}

// commands are listed in the order the usage shows them.
var commands = []command{
	{"run", "run a manifest (JSON or YAML), or a directory of them, in a worker", runCmd},
	{"show", "summarize a session directory in the terminal; -f follows a running one", showCmd},
	{"report", "write a session directory as one self-contained HTML report", reportCmd},
	{"conform", "check a worker in any language against docs/protocol.md", conformCmd},
	{"sweep", "kill orphaned tproxy sandboxes in E2B, by tag and age", sweepCmd},
}

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: tproxy COMMAND [flags] [args]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\n\"tproxy help COMMAND\" describes a command's flags.\n"+
		"Exit status: 0 success, 1 a failed or interrupted run, 2 a usage error.\n")
}

// runMain is the whole program; it returns the exit status.
func runMain(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		usage(e.stdout)
		return exitOK
	case "help":
		if len(rest) == 0 {
			usage(e.stdout)
			return exitOK
		}
		name, rest = rest[0], []string{"-h"}
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(ctx, rest, e)
		}
	}
	fmt.Fprintf(e.stderr, "tproxy: unknown command %q\n", name)
	usage(e.stderr)
	return exitUsage
}

// flagSet returns a FlagSet for command name whose usage is synopsis and
// the flags' defaults, written to stderr.
func flagSet(name, synopsis string, e *env) *flag.FlagSet {
	fs := flag.NewFlagSet("tproxy "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprint(e.stderr, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; ok is false when the command must stop with
// code: 0 after -h, 2 after a bad flag (the flag package has printed why).
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

// usageError prints a usage mistake and the command's usage, and returns
// exitUsage.
func usageError(fs *flag.FlagSet, e *env, format string, a ...any) int {
	fmt.Fprintf(e.stderr, fs.Name()+": "+format+"\n", a...)
	fs.Usage()
	return exitUsage
}

// isTerminal reports whether f is a character device other than the null
// device, as a terminal is; a pipe or a file is not. The mode bit is all
// that decides between a redrawn status line and plain lines, so no
// terminal library is needed.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string { return fmt.Sprint([]string(*m)) }

func (m *multiFlag) Set(s string) error {
	*m = append(*m, s)
	return nil
}

// parseArgs parses flags anywhere among the positional arguments, as in
// "tproxy report DIR -o report.html", up to a "--"; what follows "--" is
// returned as rest, untouched (a worker's arguments). ok is false when
// the command must stop with code (see parseFlags).
func parseArgs(fs *flag.FlagSet, args []string) (pos, rest []string, code int, ok bool) {
	if i := slices.Index(args, "--"); i >= 0 {
		args, rest = args[:i], args[i+1:]
	}
	for {
		if code, ok := parseFlags(fs, args); !ok {
			return nil, nil, code, false
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, rest, 0, true
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
