package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
	"github.com/tproxy/tproxy/worker/conform"
)

// The test binary plays three more roles, so that the tests need no build
// step: a tproxy worker when its first argument is workerArg (tproxy run
// passes it after "--", and a worker's environment is a minimal one, so
// an argument is what reaches it); the tproxy command itself when roleEnv
// is "tproxy" (for the signal test); and, for the conformance tests, a Go
// worker with or without the conformance drivers when conformEnv is
// "full" or "bare".
const (
	workerArg  = "@tproxy-test-worker"
	roleEnv    = "TPROXY_CMD_TEST_ROLE"
	conformEnv = "TPROXY_CONFORM_CMD_TEST_WORKER"
)

func TestMain(m *testing.M) {
	wrapTransport = tapTransport
	if len(os.Args) > 1 && os.Args[1] == workerArg {
		worker.Main(testWorker())
	}
	switch os.Getenv(conformEnv) {
	case "full":
		w := worker.New("conform-cmd-test", "0.0.0")
		conform.RegisterDrivers(w)
		worker.Main(w)
	case "bare":
		fmt.Fprintln(os.Stderr, "bare worker: no conformance drivers here")
		worker.Main(worker.New("conform-cmd-bare", "0.0.0"))
	}
	if os.Getenv(roleEnv) == "tproxy" {
		main()
	}
	// wiretest.Main fails the run if a frame that a tap of tapTransport
	// saw did not validate.
	code := wiretest.Main(m).Run()
	removeFixtures()
	if code == 0 {
		// As goleak.VerifyTestMain does, after the cleanup it cannot run.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// tapTransport validates against docs/schema every frame of the workers
// that run and conform start: both directions for run, whose host is the
// Go host, and the worker's only for conform, whose kit writes frames
// that are wrong on purpose. Its reports fail the test binary's run (see
// wiretest.Main); the test binary in its tproxy role writes them to its
// stderr, which TestRunSIGINT reads.
func tapTransport(cmd string, tr transport.Transport) transport.Transport {
	check := wiretest.Both
	if cmd == "conform" {
		check = wiretest.WorkerFrames
	}
	return wiretest.Transport(nil, tr, check)
}

// testWorker has the demo drivers and two for the tests: "fail", which
// writes to stderr and fails, and "block", which reports that it runs and
// then waits for its context to end, as a long step does.
func testWorker() *worker.Worker {
	w := demo.NewWorker()
	w.RegisterFunc("fail", func(ctx context.Context, s *worker.Step) error {
		fmt.Fprintln(os.Stderr, "fail driver: about to fail")
		return errors.New("the fail driver always fails")
	})
	w.RegisterFunc("block", func(ctx context.Context, s *worker.Step) error {
		s.Event("blocking", nil)
		<-ctx.Done()
		return ctx.Err()
	})
	return w
}

// result is what one runMain call did.
type result struct {
	code           int
	stdout, stderr string
}

// runT runs the command in this process, stdout a pipe unless tty.
func runT(t *testing.T, tty bool, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := runMain(t.Context(), args, &env{stdout: &out, stderr: &errOut, tty: tty})
	return result{code, out.String(), errOut.String()}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		want     string // in stdout or stderr
		toStdout bool
	}{
		{nil, exitUsage, "usage: tproxy COMMAND", false},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`, false},
		{[]string{"help"}, exitOK, "usage: tproxy COMMAND", true},
		{[]string{"-h"}, exitOK, "usage: tproxy COMMAND", true},
		{[]string{"help", "report"}, exitOK, "usage: tproxy report", false},
		{[]string{"show", "-h"}, exitOK, "usage: tproxy show", false},
		{[]string{"show"}, exitUsage, "want one session directory", false},
		{[]string{"show", "a", "b"}, exitUsage, "want one session directory, got 2", false},
		{[]string{"show", "-nope", "dir"}, exitUsage, "flag provided but not defined: -nope", false},
		{[]string{"report"}, exitUsage, "want one session directory", false},
		{[]string{"sweep", "extra"}, exitUsage, "unexpected arguments", false},
		{[]string{"sweep", "-tag", "novalue"}, exitUsage, "want KEY=VALUE", false},
		{[]string{"sweep", "-tag", "tproxy=other"}, exitUsage, "sweep only reaches sandboxes tproxy tagged", false},
		{[]string{"sweep", "-e2b-api-url", "localhost:3000"}, exitUsage, `-e2b-api-url "localhost:3000": want an http:// or https:// URL`, false},
		{[]string{"help", "sweep"}, exitOK, "-e2b-api-url URL", false},
	} {
		r := runT(t, false, tc.args...)
		got := r.stderr
		if tc.toStdout {
			got = r.stdout
		}
		if r.code != tc.code || !strings.Contains(got, tc.want) {
			t.Errorf("tproxy %q: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, r.code, r.stdout, r.stderr, tc.code, tc.want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		pos, rest []string
		o         string
	}{
		{[]string{"DIR", "-o", "x.html"}, []string{"DIR"}, nil, "x.html"},
		{[]string{"-o", "x.html", "DIR"}, []string{"DIR"}, nil, "x.html"},
		{[]string{"A", "B", "--", "-o", "y"}, []string{"A", "B"}, []string{"-o", "y"}, ""},
		{[]string{"--"}, nil, []string{}, ""},
	} {
		fs := flagSet("x", "", &env{stderr: &bytes.Buffer{}})
		o := fs.String("o", "", "")
		pos, rest, _, ok := parseArgs(fs, tc.args)
		if !ok || fmt.Sprint(pos) != fmt.Sprint(tc.pos) || fmt.Sprint(rest) != fmt.Sprint(tc.rest) || *o != tc.o {
			t.Errorf("parseArgs(%q) = %q, %q, -o %q, ok %v; want %q, %q, -o %q", tc.args, pos, rest, *o, ok, tc.pos, tc.rest, tc.o)
		}
	}
}
