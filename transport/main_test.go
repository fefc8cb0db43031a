package transport_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy/transport"
)

// childEnv names the environment variable that turns the test binary into
// a worker for the Subprocess tests: TestMain runs the mode it names
// instead of the tests.
const childEnv = "TPROXY_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	goleak.VerifyTestMain(m)
}

// runChild is the worker side of the tests. Modes that block print
// "ready" once they are set up, so a test never races their setup.
func runChild(mode string) int {
	switch mode {
	case "echo": // echo stdin to stdout line by line; exit 0 on EOF
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			fmt.Println(sc.Text())
		}
		return 0
	case "stderr-exit3":
		fmt.Fprint(os.Stderr, "starting\nboom: something bad happened\n")
		return 3
	case "sleep": // ignore stdin; die on SIGTERM
		fmt.Println("ready")
		time.Sleep(time.Hour)
		return 0
	case "pid-sleep": // say our pid, then like sleep
		fmt.Println(os.Getpid())
		time.Sleep(time.Hour)
		return 0
	case "ignore-term": // ignore stdin and SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Hour)
		return 0
	case "grandchild": // leave a grandchild behind and exit on stdin EOF
		cmd := childCommand("sleep")
		cmd.Stderr = os.Stderr // the grandchild holds the worker's stderr too
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(cmd.Process.Pid)
		io.Copy(io.Discard, os.Stdin)
		return 0
	case "escaped-grandchild": // leave a grandchild outside the process group holding stderr, and exit
		cmd := childCommand("sleep")
		cmd.Stderr = os.Stderr
		leaveGroup(cmd)
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(cmd.Process.Pid)
		fmt.Fprint(os.Stderr, "one\n")
		time.Sleep(50 * time.Millisecond) // likely a separate read for the host
		fmt.Fprint(os.Stderr, "two\n")
		return 0
	case "host-of-sleep": // start a "sleep" worker, say its pid once it is ready, wait to be killed
		exe, _ := os.Executable()
		p, err := (&transport.Subprocess{Path: exe, Env: childEnviron("sleep")}).Start(context.Background())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// Its "ready" is read: the worker writes nothing more, so only a
		// signal can end it.
		if line, err := bufio.NewReader(p).ReadString('\n'); line != "ready\n" {
			fmt.Fprintln(os.Stderr, "worker said", line, err)
			return 1
		}
		fmt.Println(p.(interface{ Pid() int }).Pid())
		select {}
	case "stderr-flood":
		os.Stderr.Write(floodLines())
		return 0
	case "log-lines":
		fmt.Fprint(os.Stderr, "hello\nworld\npanic: boom\n\ngoroutine 1 [running]:\nno newline")
		return 2
	case "stdout-forever": // ignore stdin; write to stdout until a write fails
		line := []byte("nobody reads this\n")
		for {
			if _, err := os.Stdout.Write(line); err != nil {
				return 0 // unix: SIGPIPE has killed the process before
			}
		}
	case "env": // print the environment, one variable per line, sorted
		env := os.Environ()
		slices.Sort(env)
		for _, kv := range env {
			fmt.Println(kv)
		}
		return 0
	case "stdout-flood": // write a lot and exit at once
		os.Stdout.Write(bigPayload())
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown %s %q\n", childEnv, mode)
	return 100
}

// floodLines is what the stderr-flood child writes: numbered lines, much
// more than the tail sizes used in the tests.
func floodLines() []byte {
	var b bytes.Buffer
	for i := range 4000 {
		fmt.Fprintf(&b, "line %05d: ünïcödé padding padding\n", i)
	}
	return b.Bytes()
}

// bigPayload is what the stdout-flood child writes: 1 MiB, not periodic in
// the pipe's buffer size, so a lost or repeated chunk shows.
func bigPayload() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func childCommand(mode string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = childEnviron(mode)
	return cmd
}

// childEnviron is the environment of a child in mode. Under -race, a
// program sleeps a second at exit by default (atexit_sleep_ms); that would
// only slow the tests down.
func childEnviron(mode string) []string {
	return append(os.Environ(),
		childEnv+"="+mode,
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"),
	)
}

// child returns a Subprocess that runs the test binary in mode.
func child(t *testing.T, mode string) *transport.Subprocess {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &transport.Subprocess{Path: exe, Env: childEnviron(mode)}
}

// start starts tr and closes the Process when the test ends.
func start(t *testing.T, tr transport.Transport) transport.Process {
	t.Helper()
	p, err := tr.Start(context.Background())
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func pid(t *testing.T, p transport.Process) int {
	t.Helper()
	pp, ok := p.(interface{ Pid() int })
	if !ok {
		t.Fatalf("%T has no Pid method", p)
	}
	return pp.Pid()
}

// waitDone fails the test if p is not Done within a generous bound; it
// guards against hangs, it does not measure anything.
func waitDone(t *testing.T, p transport.Process) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("process not Done after 10s")
	}
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read line: %q, %v", line, err)
	}
	return strings.TrimSuffix(line, "\n")
}

// expectReady reads the child's "ready" line.
func expectReady(t *testing.T, r *bufio.Reader) {
	t.Helper()
	if got := readLine(t, r); got != "ready" {
		t.Fatalf("child said %q, want ready", got)
	}
}
