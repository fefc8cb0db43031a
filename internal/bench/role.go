package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/tproxy/tproxy/internal/demo"
	"github.com/tproxy/tproxy/worker"
)

// roleEnv names the role a re-executed benchmark binary plays.
const roleEnv = "TPROXY_BENCH_ROLE"

// argEnv carries the role's argument (a count, a directory).
const argEnv = "TPROXY_BENCH_ARG"

// RunRole makes this process play a benchmark peer if the environment asks
// for one, and then exits; otherwise it returns at once. Call it first in
// main or TestMain.
func RunRole() {
	role := os.Getenv(roleEnv)
	if role == "" {
		return
	}
	arg := os.Getenv(argEnv)
	var err error
	switch role {
	case "echo":
		err = rawEcho()
	case "stream":
		err = rawStream()
	case "worker":
		worker.Main(Worker())
	case "worker-async":
		w := Worker()
		w.AsyncNotify = true
		worker.Main(w)
	case "host-rss":
		err = hostRSSChild(arg)
	case "raw-rss":
		err = rawRSSChild(arg)
	case "sessions":
		err = sessionsChild(arg)
	case "jsonrpc2-ping":
		err = rpcPingChild()
	case "jsonrpc2-notify":
		err = rpcNotifyChild()
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Worker is the worker the benchmarks drive: the demo drivers plus
// "noop", which does nothing (the runtime still sends step_start,
// step_complete and the step_duration_ms metric), "emit", which sends
// config.events events named "tick" with data {"i": n}, and "probe", which
// sends config.events events named "probe", each after a millisecond of
// idleness, and "say", which sends one event named "said" with data
// {"text": config.text}.
func Worker() *worker.Worker {
	w := demo.NewWorker()
	w.RegisterFunc("noop", func(context.Context, *worker.Step) error { return nil })
	w.RegisterFunc("emit", func(ctx context.Context, s *worker.Step) error {
		n, _ := s.Config()["events"].(float64)
		for i := range int(n) {
			if err := s.Event("tick", map[string]any{"i": i}); err != nil {
				return err
			}
		}
		return nil
	})
	w.RegisterFunc("probe", func(ctx context.Context, s *worker.Step) error {
		n, _ := s.Config()["events"].(float64)
		for i := range int(n) {
			time.Sleep(time.Millisecond)
			if err := s.Event("probe", map[string]any{"i": i}); err != nil {
				return err
			}
		}
		return nil
	})
	w.RegisterFunc("say", func(ctx context.Context, s *worker.Step) error {
		return s.Event("said", map[string]any{"text": s.Config()["text"]})
	})
	return w
}

// rawEcho answers each stdin line with the same line.
func rawEcho() error {
	r := bufio.NewReader(os.Stdin)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return nil
		}
		if _, err := os.Stdout.Write(line); err != nil {
			return err
		}
	}
}

// rawStream reads "n size" lines; for each it writes n lines of size
// bytes, one write per line, then "done".
func rawStream() error {
	r := bufio.NewReader(os.Stdin)
	for {
		var n, size int
		if _, err := fmt.Fscan(r, &n, &size); err != nil {
			return nil
		}
		line := []byte(strings.Repeat("x", size-1) + "\n")
		for range n {
			if _, err := os.Stdout.Write(line); err != nil {
				return err
			}
		}
		if _, err := os.Stdout.WriteString("done\n"); err != nil {
			return err
		}
	}
}

// self returns a command that runs this executable in role with arg.
func self(role, arg string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = childEnv(role, arg)
	cmd.Stderr = os.Stderr
	return cmd, nil
}

// childEnv is the environment of this executable started again in role
// with arg. Under the race detector, the child exits at once rather than
// after the detector's default second of grace (GORACE atexit_sleep_ms),
// which would otherwise add a second to every child's end.
func childEnv(role, arg string) []string {
	gorace := "atexit_sleep_ms=0"
	if v := os.Getenv("GORACE"); v != "" {
		gorace = v + " " + gorace
	}
	return append(os.Environ(), roleEnv+"="+role, argEnv+"="+arg, "GORACE="+gorace)
}

// runChild runs this executable in role with arg and decodes the JSON it
// prints into v.
func runChild(role, arg string, v any) error {
	cmd, err := self(role, arg)
	if err != nil {
		return err
	}
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("bench: %s child: %w", role, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("bench: %s child printed %q: %w", role, out, err)
	}
	return nil
}

// procStatus returns a field of /proc/self/status in bytes (0 where there
// is no /proc).
func procStatus(field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
