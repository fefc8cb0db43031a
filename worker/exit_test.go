//go:build linux

package worker_test

// Tests of how a worker process ends (issue 13, items 14 and 15), with the
// test binary re-executed in a role: a worker (worker.Main), or a host
// that drives one, so that the host itself can be killed.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/proctest"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// roleEnv makes the test binary play a role instead of running the tests
// (see TestMain); workDirEnv is the worker role's WorkDir.
const (
	roleEnv    = "TPROXY_WORKER_TEST_ROLE"
	workDirEnv = "TPROXY_WORKER_TEST_WORKDIR"
)

func init() {
	playRole = func() {
		if role := os.Getenv(roleEnv); role != "" {
			os.Exit(runRole(role))
		}
	}
}

// runRole plays role and returns the exit code.
func runRole(role string) int {
	switch role {
	case "worker":
		worker.Main(exitWorker())
	case "host":
		return hostRole()
	}
	fmt.Fprintf(os.Stderr, "unknown %s %q\n", roleEnv, role)
	return 100
}

// exitWorker is the worker role: "spawn" starts sleep 100 and waits for
// it, bound to the step's context, or with config "leave" not: it then
// returns when the step is cancelled, leaving the child running; "block"
// waits for its context to end.
func exitWorker() *worker.Worker {
	w := worker.New("exit-test", "1")
	w.WorkDir = os.Getenv(workDirEnv)
	w.RegisterFunc("spawn", func(ctx context.Context, s *worker.Step) error {
		leave, _ := s.Config()["leave"].(bool)
		cmd := exec.CommandContext(ctx, "sleep", "100")
		if leave {
			cmd = exec.Command("sleep", "100")
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		s.Event("spawned", map[string]any{"worker": os.Getpid(), "child": cmd.Process.Pid})
		if leave {
			<-ctx.Done()
			return ctx.Err()
		}
		return cmd.Wait()
	})
	w.RegisterFunc("block", func(ctx context.Context, s *worker.Step) error {
		s.Event("blocked", nil)
		<-ctx.Done()
		return ctx.Err()
	})
	return w
}

// roleEnviron is the environment of the test binary in role. Under -race
// a program sleeps a second when it exits with code 0 (atexit_sleep_ms).
func roleEnviron(role, workDir string) []string {
	return append(os.Environ(), roleEnv+"="+role, workDirEnv+"="+workDir,
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// workerTransport runs the test binary as a worker, its frames and the
// host's validated against docs/schema.
func workerTransport(t testing.TB, workDir string) transport.Transport {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return wiretest.Transport(t, &transport.Subprocess{Path: exe, Env: roleEnviron("worker", workDir)}, wiretest.Both)
}

// leaveEnv set makes the host role's "spawn" step leave its child behind.
const leaveEnv = "TPROXY_WORKER_TEST_LEAVE"

// hostRole starts a worker, prepares a session, runs "spawn" and prints
// "dir <session dir>" and "pids <worker> <child>" on stdout, then waits to
// be killed.
func hostRole() int {
	ctx := context.Background()
	exe, _ := os.Executable()
	tr := &transport.Subprocess{Path: exe, Env: roleEnviron("worker", os.Getenv(workDirEnv)), Stderr: os.Stderr}
	spawned := make(chan tproxy.Event, 1)
	c, err := host.Start(ctx, tr, host.WithSink(eventFunc(func(e tproxy.Event) {
		if e.Name == "spawned" {
			spawned <- e
		}
	})))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	res, err := c.Prepare(ctx, tproxy.PrepareParams{SessionID: "orphan", Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "s", Driver: "spawn"}}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("dir", res.SessionDir)
	cfg := map[string]any{"leave": os.Getenv(leaveEnv) != ""}
	go c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "s", Driver: "spawn", Config: cfg})
	e := <-spawned
	fmt.Println("pids", e.Data["worker"], e.Data["child"])
	select {} // until killed
}

// eventFunc is a sink that calls f with each event.
type eventFunc func(tproxy.Event)

func (f eventFunc) Event(_ context.Context, e tproxy.Event) error { f(e); return nil }
func (f eventFunc) Metric(context.Context, tproxy.Metric) error   { return nil }
func (f eventFunc) Log(context.Context, tproxy.LogRecord) error   { return nil }
func (f eventFunc) Flush() error                                  { return nil }

// TestHostKilledMidStepLeavesNoOrphan: a host SIGKILLed while a step runs
// a child process. The worker (SIGTERM from its parent-death signal, and
// its stdin's end) cancels the step, removes its session directory and
// exits; its driver's child goes with it, whether the driver bound it to
// the step's context or left it behind. The test waits (a hang guard of
// 10 s, polling /proc) and logs how long it took; the acceptance bound is
// 1 s.
func TestHostKilledMidStepLeavesNoOrphan(t *testing.T) {
	for _, leave := range []bool{false, true} {
		name := "child bound to the step"
		if leave {
			name = "child left behind by the driver"
		}
		t.Run(name, func(t *testing.T) { hostKilledMidStep(t, leave) })
	}
}

func hostKilledMidStep(t *testing.T, leave bool) {
	workDir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := exec.Command(exe)
	h.Env = roleEnviron("host", workDir)
	if leave {
		h.Env = append(h.Env, leaveEnv+"=1")
	}
	h.Stderr = os.Stderr
	out, err := h.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	defer h.Wait()
	defer h.Process.Kill()
	r := bufio.NewReader(out)
	var sessionDir string
	var workerPid, childPid int
	for workerPid == 0 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("the host role ended before the step started: %v", err)
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "dir":
			sessionDir = f[1]
		case len(f) == 3 && f[0] == "pids":
			workerPid, _ = strconv.Atoi(f[1])
			childPid, _ = strconv.Atoi(f[2])
		}
	}
	t.Cleanup(func() { // should the test fail, leave nothing running
		syscall.Kill(childPid, syscall.SIGKILL)
		syscall.Kill(workerPid, syscall.SIGKILL)
	})
	if proctest.Exited(workerPid) || proctest.Exited(childPid) {
		t.Fatal("the worker or its child is not running before the host is killed")
	}
	if _, err := os.Stat(sessionDir); err != nil {
		t.Fatalf("the session directory: %v", err)
	}

	killed := time.Now()
	if err := h.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for !proctest.Exited(workerPid) || !proctest.Exited(childPid) {
		if time.Since(killed) > 10*time.Second { // a hang guard
			t.Fatalf("10 s after the host's SIGKILL: worker %d dead %v, its child %d dead %v",
				workerPid, proctest.Exited(workerPid), childPid, proctest.Exited(childPid))
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(killed)
	t.Logf("the worker and its child were gone %v after the host's SIGKILL", elapsed)
	if elapsed > time.Second {
		t.Errorf("the worker and its child took %v to go, over the 1 s bound", elapsed)
	}
	if _, err := os.Stat(sessionDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the session directory %s is left behind (%v)", sessionDir, err)
	}
	if left, _ := filepath.Glob(filepath.Join(workDir, "tproxy-*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// signalled is a sink that keeps events and closes ch at the first named
// name.
type signalled struct {
	logsink.Memory
	name string
	once sync.Once
	ch   chan struct{}
}

func (s *signalled) Event(ctx context.Context, e tproxy.Event) error {
	err := s.Memory.Event(ctx, e)
	if e.Name == s.name {
		s.once.Do(func() { close(s.ch) })
	}
	return err
}

// TestSIGTERMMidStepAnswersCancelled: SIGTERM to a worker process in the
// middle of a step, 20 times. Every time the host gets step_failed
// (error_type cancelled) and the -32800 answer, the worker exits 0, and
// its session directory is gone.
func TestSIGTERMMidStepAnswersCancelled(t *testing.T) {
	const runs = 20
	workDir := t.TempDir()
	tr := workerTransport(t, workDir)
	answered := 0
	for i := range runs {
		ok := t.Run(fmt.Sprint(i), func(t *testing.T) {
			sink := &signalled{name: "blocked", ch: make(chan struct{})}
			c, err := host.Start(t.Context(), tr, host.WithSink(sink))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Prepare(t.Context(), tproxy.PrepareParams{SessionID: "term"}); err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() {
				_, err := c.ExecStep(t.Context(), tproxy.ExecStepParams{StepID: "b", Driver: "block"})
				errc <- err
			}()
			<-sink.ch
			if err := syscall.Kill(c.Process().(interface{ Pid() int }).Pid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			var callErr error
			select {
			case callErr = <-errc:
			case <-time.After(10 * time.Second): // a hang guard
				t.Fatal("ExecStep still waiting 10 s after SIGTERM")
			}
			var re *host.RemoteError
			if !errors.As(callErr, &re) || re.Code != tproxy.CodeRequestCancelled {
				t.Errorf("ExecStep = %v, want a *host.RemoteError with code %d", callErr, tproxy.CodeRequestCancelled)
			} else if !strings.Contains(re.Message, "SIGTERM") {
				t.Errorf("the answer %q does not say SIGTERM", re.Message)
			}
			var failed *tproxy.Event
			for _, e := range sink.Events() {
				if e.Name == "step_failed" {
					failed = &e
				}
			}
			if failed == nil || failed.Data["error_type"] != "cancelled" {
				t.Errorf("step_failed = %+v, want error_type cancelled", failed)
			}
			select {
			case <-c.Process().Done():
			case <-time.After(10 * time.Second): // a hang guard
				t.Fatal("the worker did not exit after SIGTERM")
			}
			if st := c.Process().Exit(); !st.Success() {
				t.Errorf("exit %v, want 0", st)
			}
			if left, _ := filepath.Glob(filepath.Join(workDir, "tproxy-*")); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
		})
		if ok {
			answered++
		}
	}
	t.Logf("%d of %d runs: step_failed (cancelled) and the -32800 answer reached the host", answered, runs)
}
