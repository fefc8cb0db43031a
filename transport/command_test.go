//go:build linux

package transport_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy/transport"
)

// layer is an intermediary between the host and the test worker, run by
// transport.Command, as ssh, kubectl exec or docker exec would be.
type layer struct {
	name string
	// forks is true when the layer runs the worker as its child rather
	// than exec'ing it: the worker then has a pid of its own, and a
	// signal that kills the worker comes back as the layer's 128+N.
	forks bool
	cmd   func(t *testing.T, mode string) *transport.Subprocess
}

func layers() []layer {
	return []layer{
		{"sh exec", false, func(t *testing.T, mode string) *transport.Subprocess {
			c := transport.Command("sh", "-c", `exec "$@"`, "sh", exe(t))
			c.Env = childEnviron(mode)
			return c
		}},
		{"env -i", false, func(t *testing.T, mode string) *transport.Subprocess {
			// The worker sees only what is on the command line (and
			// GOCOVERDIR, so that a -cover build of the test binary
			// has somewhere to write and says nothing on stderr).
			args := []string{"-i", childEnv + "=" + mode, "GORACE=atexit_sleep_ms=0"}
			if d := os.Getenv("GOCOVERDIR"); d != "" {
				args = append(args, "GOCOVERDIR="+d)
			}
			return transport.Command("env", append(args, exe(t))...)
		}},
		{"sh fork", true, func(t *testing.T, mode string) *transport.Subprocess {
			// Not the last command of the script, so no shell execs it.
			c := transport.Command("sh", "-c", `"$@"; exit $?`, "sh", exe(t))
			c.Env = childEnviron(mode)
			return c
		}},
	}
}

func exe(t *testing.T) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCommand_EchoRoundTripAndCleanExit(t *testing.T) {
	for _, l := range layers() {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			p := start(t, l.cmd(t, "echo"))
			r := bufio.NewReader(p)
			for _, msg := range []string{`{"jsonrpc":"2.0","id":1}`, "ünïcödé", strings.Repeat("x", 60<<10)} {
				if _, err := fmt.Fprintln(p, msg); err != nil {
					t.Fatal(err)
				}
				if got := readLine(t, r); got != msg {
					t.Errorf("echo = %.40q, want %.40q", got, msg)
				}
			}
			if err := p.Close(); err != nil {
				t.Errorf("Close = %v", err)
			}
			if diff := cmp.Diff(transport.ExitStatus{}, p.Exit()); diff != "" {
				t.Errorf("Exit (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCommand_ExitCodeAndStderrTail(t *testing.T) {
	for _, l := range layers() {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			p := start(t, l.cmd(t, "stderr-exit3"))
			waitDone(t, p)
			if diff := cmp.Diff(transport.ExitStatus{Code: 3}, p.Exit()); diff != "" {
				t.Errorf("Exit (-want +got):\n%s", diff)
			}
			if got, want := p.StderrTail(), "starting\nboom: something bad happened\n"; got != want {
				t.Errorf("StderrTail = %q, want %q", got, want)
			}
			msg := transport.NewExitError(p).Error()
			if !strings.Contains(msg, "exit status 3") || !strings.Contains(msg, "boom") {
				t.Errorf("ExitError = %q", msg)
			}
		})
	}
}

// TestCommand_InnerWorkerKilled kills the worker itself, not the layer:
// the host sees "signal: killed" through every layer, decoded from 137
// where the layer is a forking shell.
func TestCommand_InnerWorkerKilled(t *testing.T) {
	for _, l := range layers() {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			p := start(t, l.cmd(t, "pid-sleep"))
			r := bufio.NewReader(p)
			line := readLine(t, r)
			wpid, err := strconv.Atoi(line)
			if err != nil {
				t.Fatalf("worker pid %q: %v", line, err)
			}
			if l.forks == (wpid == pid(t, p)) {
				t.Fatalf("worker pid %d, layer pid %d: the layer does not fork as this test assumes", wpid, pid(t, p))
			}
			if err := syscall.Kill(wpid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitDone(t, p)
			st := p.Exit()
			if st.Signal != syscall.SIGKILL || st.Code != -1 {
				t.Errorf("Exit = %+v, want signal: killed", st)
			}
			if decoded := strings.Contains(st.Reason, "status 137, decoded as signal 9"); decoded != l.forks {
				t.Errorf("Exit reason %q; decoded from 137: %v, want %v", st.Reason, decoded, l.forks)
			}
			if got := transport.NewExitError(p).Error(); !strings.Contains(got, "signal: killed") {
				t.Errorf("ExitError = %q", got)
			}
			if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
				t.Errorf("stdout after kill = %q, %v; want EOF", rest, err)
			}
		})
	}
}

// TestCommand_CloseLadder: each rung reaches the worker through the layer.
// A forking shell dies of SIGTERM itself, so a worker that ignores SIGTERM
// still goes, with the shell's group, and the status is the shell's.
func TestCommand_CloseLadder(t *testing.T) {
	for _, l := range layers() {
		for _, tt := range []struct {
			mode       string
			closeAfter time.Duration
			termAfter  time.Duration
			want       syscall.Signal
		}{
			{"echo", 10 * time.Second, 10 * time.Second, 0},
			{"sleep", 50 * time.Millisecond, 10 * time.Second, syscall.SIGTERM},
			{"ignore-term", 50 * time.Millisecond, 50 * time.Millisecond, map[bool]syscall.Signal{false: syscall.SIGKILL, true: syscall.SIGTERM}[l.forks]},
		} {
			t.Run(l.name+"/"+tt.mode, func(t *testing.T) {
				t.Parallel()
				s := l.cmd(t, tt.mode)
				s.CloseTimeout, s.TermTimeout = tt.closeAfter, tt.termAfter
				p := start(t, s)
				if tt.mode != "echo" {
					expectReady(t, bufio.NewReader(p))
				}
				if err := p.Close(); err != nil {
					t.Errorf("Close = %v", err)
				}
				if st := p.Exit(); st.Signal != tt.want {
					t.Errorf("Exit = %v, want signal %v", st, tt.want)
				}
			})
		}
	}
}

// TestCommand_KillEndsTheWorker: Kill (the host's watchdog) ends the layer
// and the worker behind it.
func TestCommand_KillEndsTheWorker(t *testing.T) {
	for _, l := range layers() {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			p := start(t, l.cmd(t, "pid-sleep"))
			wpid, err := strconv.Atoi(readLine(t, bufio.NewReader(p)))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.(transport.Killer).Kill(); err != nil {
				t.Fatal(err)
			}
			if st := p.Exit(); st.Signal != syscall.SIGKILL {
				t.Errorf("Exit = %v, want signal: killed", st)
			}
			deadline := time.Now().Add(10 * time.Second)
			for !processGone(wpid) {
				if time.Now().After(deadline) {
					syscall.Kill(wpid, syscall.SIGKILL)
					t.Fatalf("worker %d behind the layer still runs after Kill", wpid)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestCommand_WorkerCodeAbove128: the documented price of decoding: a
// worker's own exit status 130 through Command reads as SIGINT, and a plain
// Subprocess does not decode.
func TestCommand_WorkerCodeAbove128(t *testing.T) {
	c := transport.Command("sh", "-c", "exit 130")
	p := start(t, c)
	waitDone(t, p)
	if st := p.Exit(); st.Signal != syscall.SIGINT || !strings.Contains(st.Reason, "exited with status 130") {
		t.Errorf("Command Exit = %+v, want SIGINT decoded from 130", st)
	}
	p = start(t, &transport.Subprocess{Path: "sh", Args: []string{"-c", "exit 130"}})
	waitDone(t, p)
	if diff := cmp.Diff(transport.ExitStatus{Code: 130}, p.Exit()); diff != "" {
		t.Errorf("Subprocess Exit (-want +got):\n%s", diff)
	}
}

func TestCommand_StartErrorNamesTheCommand(t *testing.T) {
	_, err := transport.Command("tproxy-no-such-intermediary", "-i", "worker").Start(t.Context())
	if err == nil || !strings.Contains(err.Error(), "tproxy-no-such-intermediary") {
		t.Errorf("Start = %v, want an error naming the command", err)
	}
}
