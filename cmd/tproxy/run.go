package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/transport/e2b"
)

const runUsage = `usage: tproxy run [flags] MANIFEST [-- WORKER-ARG...]

Runs MANIFEST (a .json, .yaml or .yml file holding a tproxy.Manifest:
"pipeline" and "steps") in the worker that -worker names, and records the
session in a session directory (-dir, else a new one under
$TMPDIR/tproxy-sessions). Arguments after -- are passed to the worker:

  tproxy run -worker ./bin/my-worker manifest.json
  tproxy run -worker python3 pipeline.yaml -- my_worker.py
  tproxy run -e2b -template base -worker ./bin/my-worker-linux-amd64 manifest.json
  tproxy run -parallel 4 -worker ./bin/my-worker -dir runs/ manifests/

With -e2b the API key is E2B_API_KEY (it never reaches the sandbox). For
a self-hosted E2B or a local fake, -e2b-api-url sets the control plane's
base URL (default: E2B_API_URL, else https://api.e2b.app, or
api.$E2B_DOMAIN) and -e2b-envd-url the base URL of every call to a
sandbox's daemon, which then picks the sandbox by header (default: each
sandbox's own host, https://49983-<sandbox id>.e2b.app):

  tproxy run -e2b -e2b-api-url http://localhost:3000 -e2b-envd-url http://localhost:3000 \
    -worker ./bin/my-worker-linux-amd64 manifest.json

When MANIFEST is a directory, every manifest in it runs in its own worker
and session directory (DIR/<manifest name> with -dir), -parallel at once.

On a terminal a status line shows the step running, events per second and
the elapsed time, and each step that ends gets a line; on a pipe only the
lines are written, without escape sequences. Ctrl-C cancels the run
cleanly: the step in flight is cancelled, the worker stopped and
status.json written (a second Ctrl-C kills this program at once).

The worker's environment is a minimal one (PATH, HOME, locale, TMPDIR,
...) plus what -env adds, so that this shell's credentials reach it only
when named.

Exit status: 0 when the run (every run) succeeded, 1 when one failed or
was cancelled, 2 for a usage error: a bad flag, or a manifest that cannot
be read or is invalid (nothing is run then).

Flags:
`

// runFlags are the flags of "tproxy run".
type runFlags struct {
	worker          string
	env, secrets    multiFlag
	dir             string
	timeout         time.Duration
	useE2B          bool
	template        string
	e2bAPIURL       string
	e2bEnvdURL      string
	inProcess       bool
	parallel        int
	continueOnError bool
	logLevel        string

	stderr io.Writer // where diagnostics go, above the status line
}

// runCmd is "tproxy run".
func runCmd(ctx context.Context, args []string, e *env) int {
	fs := flagSet("run", runUsage, e)
	var f runFlags
	fs.StringVar(&f.worker, "worker", "", "the worker `program`: a path, or a name looked up in PATH")
	fs.Var(&f.env, "env", "`KEY=VALUE` added to the worker's environment (repeatable)")
	fs.StringVar(&f.dir, "dir", "", "session `directory` (new or empty); with a directory of manifests, their parent")
	fs.Var(&f.secrets, "secret", "a JSON `pointer` into each step's config, such as /connection/dsn, whose value is masked everywhere (repeatable)")
	fs.DurationVar(&f.timeout, "timeout", 0, "bound on each session, from the worker's start to its last step (0: none)")
	fs.BoolVar(&f.useE2B, "e2b", false, "run the worker in an E2B sandbox (E2B_API_KEY; -worker must be a static linux/amd64 binary)")
	fs.StringVar(&f.template, "template", e2b.DefaultTemplate, "with -e2b: the sandbox `template`")
	fs.StringVar(&f.e2bAPIURL, "e2b-api-url", "", "with -e2b: the control plane's base `URL`, for a self-hosted E2B or a local fake (empty: E2B_API_URL, else https://api.<E2B_DOMAIN or e2b.app>)")
	fs.StringVar(&f.e2bEnvdURL, "e2b-envd-url", "", "with -e2b: the base `URL` of every call to a sandbox's daemon, which picks the sandbox by header (empty: the sandbox's own host under E2B_DOMAIN or e2b.app)")
	fs.BoolVar(&f.inProcess, "in-process", false, "run the steps in this process with the drivers built into tproxy (the demo drivers extract, transform, load), instead of -worker")
	fs.IntVar(&f.parallel, "parallel", 1, "with a directory of manifests: how many sessions run at once")
	fs.BoolVar(&f.continueOnError, "continue-on-error", false, "after a step fails, run the steps that do not depend on it")
	fs.StringVar(&f.logLevel, "log-level", "", "the lowest level of driver log records sent: debug, info, warn or error")
	pos, workerArgs, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	switch {
	case len(pos) != 1:
		return usageError(fs, e, "want one manifest (or directory of manifests), got %d arguments", len(pos))
	case f.inProcess && (f.worker != "" || f.useE2B || len(workerArgs) > 0):
		return usageError(fs, e, "-in-process runs the built-in drivers: it takes no -worker, -e2b or worker arguments")
	case !f.inProcess && f.worker == "":
		return usageError(fs, e, "-worker is required (or -in-process)")
	case !f.useE2B && (f.e2bAPIURL != "" || f.e2bEnvdURL != ""):
		return usageError(fs, e, "-e2b-api-url and -e2b-envd-url take effect with -e2b only")
	case f.parallel < 1:
		return usageError(fs, e, "-parallel must be at least 1")
	case f.timeout < 0:
		return usageError(fs, e, "-timeout must not be negative")
	}
	for _, kv := range f.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return usageError(fs, e, "-env %q: want KEY=VALUE", kv)
		}
	}
	for _, u := range []struct{ name, value string }{{"-e2b-api-url", f.e2bAPIURL}, {"-e2b-envd-url", f.e2bEnvdURL}} {
		if u.value == "" {
			continue
		}
		if !isHTTPURL(u.value) {
			return usageError(fs, e, "%s %q: want an http:// or https:// URL", u.name, u.value)
		}
	}
	for _, p := range f.secrets {
		if p != "" && !strings.HasPrefix(p, "/") {
			return usageError(fs, e, "-secret %q: a JSON pointer starts with /", p)
		}
	}

	target := pos[0]
	fi, err := os.Stat(target)
	if err != nil {
		return usageError(fs, e, "%v", err)
	}
	var paths []string
	if fi.IsDir() {
		if paths, err = manifestDir(target); err != nil {
			return usageError(fs, e, "%v", err)
		}
	} else {
		paths = []string{target}
	}
	manifests := make([]tproxy.Manifest, len(paths))
	for i, p := range paths {
		if manifests[i], err = loadManifest(p); err != nil {
			fmt.Fprintf(e.stderr, "tproxy run: %v\n", err)
			return exitUsage
		}
	}
	p := newProgress(e.stdout, e.tty)
	defer p.Close()
	stderr := p.above(e.stderr)
	f.stderr = stderr
	tr := f.transport(workerArgs, stderr)
	if wrapTransport != nil {
		tr = wrapTransport("run", tr)
	}
	if fi.IsDir() {
		return runMany(ctx, tr, &f, paths, manifests, p, e)
	}
	return runOne(ctx, tr, &f, manifests[0], p, e)
}

// wrapTransport, when not nil, wraps the transport that run and conform
// build from their flags, named by cmd ("run" or "conform"). It is nil in
// the command; the tests set it to check every frame the host and the
// worker exchange against docs/schema.
var wrapTransport func(cmd string, tr transport.Transport) transport.Transport

// transport builds the transport the flags ask for. Worker stderr goes to
// stderr, besides the tail status.json keeps.
func (f *runFlags) transport(workerArgs []string, stderr io.Writer) transport.Transport {
	switch {
	case f.inProcess:
		// Built-in drivers only: a Go binary cannot load the user's
		// drivers at run time, so this is the way to try the command (and
		// to test it) without building a worker.
		w := demo.NewWorker()
		w.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		return &transport.InMemory{Serve: w.Serve}
	case f.useE2B:
		envMap := map[string]string{}
		for _, kv := range f.env {
			k, v, _ := strings.Cut(kv, "=")
			envMap[k] = v
		}
		return &e2b.E2B{Binary: f.worker, Args: workerArgs, Env: envMap, Template: f.template, Stderr: stderr,
			APIURL: f.e2bAPIURL, EnvdURL: f.e2bEnvdURL}
	default:
		return &transport.Subprocess{Path: f.worker, Args: workerArgs, Env: f.env, Stderr: stderr}
	}
}

// isHTTPURL reports whether s is an absolute http:// or https:// URL, as
// the base URLs of -e2b-api-url and -e2b-envd-url must be.
func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func (f *runFlags) spec(m tproxy.Manifest, dir string) host.RunSpec {
	return host.RunSpec{
		Dir:             dir,
		Manifest:        m,
		Secrets:         tproxy.Secrets{Pointers: f.secrets},
		Timeout:         f.timeout,
		ContinueOnError: f.continueOnError,
		LogLevel:        f.logLevel,
		// The host's own diagnostics (a dropped notification, a failed
		// kill) are warnings worth seeing; its info records repeat what
		// the progress lines say.
		Options: []host.Option{host.WithLogger(slog.New(slog.NewTextHandler(f.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))},
	}
}

// runOne runs one manifest with a live view.
func runOne(ctx context.Context, tr transport.Transport, f *runFlags, m tproxy.Manifest, p *progress, e *env) int {
	spec := f.spec(m, f.dir)
	spec.Sink = p
	st, err := host.RunManifest(ctx, tr, spec)
	p.Close()
	if st != nil {
		fmt.Fprintln(e.stdout, outcomeLine(st))
	}
	if err != nil {
		if st != nil && st.Outcome == host.OutcomeCancelled && ctx.Err() != nil {
			fmt.Fprintln(e.stderr, "tproxy run: interrupted; the run was cancelled and status.json written")
		} else {
			fmt.Fprintf(e.stderr, "tproxy run: %v\n", err)
		}
		return exitFail
	}
	return exitOK
}

// outcomeLine is a run's last line: its outcome, steps, duration and
// session directory.
func outcomeLine(st *host.Status) string {
	s := fmt.Sprintf("%s: %d/%d steps in %s; session directory %s", st.Outcome, st.StepsCompleted, st.StepsTotal, fmtMS(st.DurationMS), st.Dir)
	if f := st.Failure; f != nil {
		s += "\n  failure: " + f.Kind
		if f.StepID != "" {
			s += fmt.Sprintf(" at step %q", f.StepID)
		}
		s += ": " + oneLine(f.Reason, 200)
	}
	return s
}

// runMany runs a directory of manifests, parallel sessions at once, each
// in its own worker and session directory.
func runMany(ctx context.Context, tr transport.Transport, f *runFlags, paths []string, ms []tproxy.Manifest, p *progress, e *env) int {
	jobs := make([]host.Job, len(ms))
	for i, m := range ms {
		dir := ""
		if f.dir != "" {
			name := strings.TrimSuffix(filepath.Base(paths[i]), filepath.Ext(paths[i]))
			dir = filepath.Join(f.dir, name)
		}
		jobs[i] = host.Job{Transport: tr, Spec: f.spec(m, dir)}
	}
	many := &host.Many{Parallelism: f.parallel, OnProgress: p.many}
	sum, err := many.Run(ctx, jobs)
	p.Close()
	if sum == nil {
		fmt.Fprintf(e.stderr, "tproxy run: %v\n", err)
		return exitFail
	}
	for i, r := range sum.Results {
		name := filepath.Base(paths[i])
		if r.Status == nil {
			fmt.Fprintf(e.stdout, "%s: not run: %v\n", name, r.Err)
			continue
		}
		fmt.Fprintf(e.stdout, "%s: %s\n", name, outcomeLine(r.Status))
	}
	fmt.Fprintf(e.stdout, "%d sessions: %d succeeded, %d failed, %d cancelled in %s\n",
		len(sum.Results), sum.Succeeded, sum.Failed, sum.Cancelled, fmtDuration(sum.Wall))
	var me *host.ManyError
	if err != nil && !errors.As(err, &me) {
		fmt.Fprintf(e.stderr, "tproxy run: %v\n", err)
	}
	if err != nil {
		return exitFail
	}
	return exitOK
}
