//go:build linux

package transport_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy/transport"
)

func TestSubprocess_EchoRoundTrip(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p, err := child(t, "echo").Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cancel() // ctx bounds only the start

	r := bufio.NewReader(p)
	for _, msg := range []string{"hello", `{"jsonrpc":"2.0","id":1}`, "ünïcödé"} {
		if _, err := fmt.Fprintln(p, msg); err != nil {
			t.Fatal(err)
		}
		if got := readLine(t, r); got != msg {
			t.Errorf("echo = %q, want %q", got, msg)
		}
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if diff := cmp.Diff(transport.ExitStatus{}, p.Exit()); diff != "" {
		t.Errorf("Exit (-want +got):\n%s", diff)
	}
}

func TestSubprocess_ExitCodeAndStderrTail(t *testing.T) {
	p := start(t, child(t, "stderr-exit3"))
	waitDone(t, p)

	if diff := cmp.Diff(transport.ExitStatus{Code: 3}, p.Exit()); diff != "" {
		t.Errorf("Exit (-want +got):\n%s", diff)
	}
	if got, want := p.StderrTail(), "starting\nboom: something bad happened\n"; got != want {
		t.Errorf("StderrTail = %q, want %q", got, want)
	}
	msg := transport.NewExitError(p).Error()
	for _, want := range []string{"exit status 3", "boom: something bad happened"} {
		if !strings.Contains(msg, want) {
			t.Errorf("ExitError %q does not contain %q", msg, want)
		}
	}
	if _, err := io.ReadAll(p); err != nil {
		t.Errorf("reading stdout of an exited worker: %v, want EOF", err)
	}
	if _, err := p.Write([]byte("anyone there?\n")); err == nil {
		t.Error("Write to an exited worker succeeded")
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close = %v, want nil: a non-zero exit is reported by Exit", err)
	}
}

func TestSubprocess_KilledFromOutside(t *testing.T) {
	p := start(t, child(t, "sleep"))
	r := bufio.NewReader(p)
	expectReady(t, r)

	if err := syscall.Kill(pid(t, p), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p) // Done without anyone calling Close

	want := transport.ExitStatus{Code: -1, Signal: syscall.SIGKILL}
	if diff := cmp.Diff(want, p.Exit()); diff != "" {
		t.Errorf("Exit (-want +got):\n%s", diff)
	}
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Errorf("stdout after kill = %q, %v; want EOF", rest, err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}

func TestSubprocess_CloseLadder(t *testing.T) {
	tests := []struct {
		name       string
		mode       string
		closeAfter time.Duration
		termAfter  time.Duration
		want       transport.ExitStatus
	}{
		{
			name: "exits on stdin EOF", mode: "echo",
			closeAfter: 10 * time.Second, termAfter: 10 * time.Second,
			want: transport.ExitStatus{Code: 0},
		},
		{
			name: "ignores stdin EOF, exits on SIGTERM", mode: "sleep",
			closeAfter: 50 * time.Millisecond, termAfter: 10 * time.Second,
			want: transport.ExitStatus{Code: -1, Signal: syscall.SIGTERM},
		},
		{
			name: "ignores stdin EOF and SIGTERM", mode: "ignore-term",
			closeAfter: 50 * time.Millisecond, termAfter: 50 * time.Millisecond,
			want: transport.ExitStatus{Code: -1, Signal: syscall.SIGKILL},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := child(t, tt.mode)
			s.CloseTimeout, s.TermTimeout = tt.closeAfter, tt.termAfter
			p := start(t, s)
			if tt.mode != "echo" {
				expectReady(t, bufio.NewReader(p))
			}
			if err := p.Close(); err != nil {
				t.Errorf("Close = %v", err)
			}
			select {
			case <-p.Done():
			default:
				t.Fatal("Close returned before Done")
			}
			if diff := cmp.Diff(tt.want, p.Exit()); diff != "" {
				t.Errorf("Exit (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSubprocess_GrandchildDiesWithWorker(t *testing.T) {
	p := start(t, child(t, "grandchild"))
	line := readLine(t, bufio.NewReader(p))
	gpid, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("grandchild pid %q: %v", line, err)
	}
	if processGone(gpid) {
		t.Fatalf("grandchild %d is not running before Close", gpid)
	}

	// The worker exits on stdin EOF and leaves the grandchild behind; the
	// transport must kill it with the worker's process group.
	if err := p.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if diff := cmp.Diff(transport.ExitStatus{Code: 0}, p.Exit()); diff != "" {
		t.Errorf("Exit (-want +got):\n%s", diff)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !processGone(gpid) {
		if time.Now().After(deadline) {
			syscall.Kill(gpid, syscall.SIGKILL)
			t.Fatalf("grandchild %d still running after Close", gpid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// slowWriter is a Stderr writer whose first write takes a while, so the
// stderr drainer lags behind the worker.
type slowWriter struct {
	syncBuffer
	once sync.Once
}

func (w *slowWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { time.Sleep(300 * time.Millisecond) })
	return w.syncBuffer.Write(p)
}

func TestSubprocess_DoneDespiteEscapedStderrHolder(t *testing.T) {
	defer transport.SetStderrGrace(50 * time.Millisecond)()
	var stderr slowWriter
	s := child(t, "escaped-grandchild")
	s.Stderr = &stderr
	p := start(t, s)
	line := readLine(t, bufio.NewReader(p))
	gpid, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("grandchild pid %q: %v", line, err)
	}
	// The grandchild left the worker's process group, so it survives the
	// worker and keeps the stderr pipe open: Done must not wait for it,
	// and what the worker wrote must not be lost though the drainer lags.
	t.Cleanup(func() { syscall.Kill(gpid, syscall.SIGKILL) })

	waitDone(t, p)
	if diff := cmp.Diff(transport.ExitStatus{Code: 0}, p.Exit()); diff != "" {
		t.Errorf("Exit (-want +got):\n%s", diff)
	}
	const want = "one\ntwo\n"
	if got := p.StderrTail(); got != want {
		t.Errorf("StderrTail = %q, want %q", got, want)
	}
	if got := string(stderr.Bytes()); got != want {
		t.Errorf("Stderr got %q, want %q", got, want)
	}
	if processGone(gpid) {
		t.Errorf("grandchild %d outside the group is gone; the test proves nothing", gpid)
	}
}

// processGone reports whether pid no longer runs. A killed orphan may stay
// a zombie if the container's init does not reap, so a zombie counts as
// gone.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(fields) == 0 || fields[0] == "Z" || fields[0] == "X"
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.b.Bytes())
}

func TestSubprocess_StderrTailIsBoundedAndStderrGetsAll(t *testing.T) {
	const tailSize = 1000
	var all syncBuffer
	s := child(t, "stderr-flood")
	s.TailSize = tailSize
	s.Stderr = &all
	p := start(t, s)
	waitDone(t, p)

	want := floodLines()
	if got := all.Bytes(); !bytes.Equal(got, want) {
		t.Errorf("Stderr got %d bytes, want the %d the worker wrote", len(got), len(want))
	}
	tail := p.StderrTail()
	if len(tail) > tailSize {
		t.Errorf("StderrTail has %d bytes, more than TailSize %d", len(tail), tailSize)
	}
	if !bytes.HasSuffix(want, []byte(tail)) {
		t.Errorf("StderrTail %q is not the end of what the worker wrote", tail)
	}
	if !strings.HasPrefix(tail, "line ") || !utf8.ValidString(tail) {
		t.Errorf("StderrTail does not start at a line boundary: %q", tail)
	}
}

func TestSubprocess_DefaultTailSize(t *testing.T) {
	p := start(t, child(t, "stderr-flood"))
	waitDone(t, p)
	if tail := p.StderrTail(); len(tail) > 16<<10 || len(tail) < 15<<10 {
		t.Errorf("StderrTail has %d bytes, want about 16 KiB", len(tail))
	}
}

// recordHandler is a slog.Handler that keeps level and message of each
// record.
type recordHandler struct {
	mu   sync.Mutex
	recs []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Level.String()+" "+r.Message)
	return nil
}

func (h *recordHandler) records() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.recs...)
}

func TestSubprocess_LoggerGetsLines(t *testing.T) {
	h := &recordHandler{}
	s := child(t, "log-lines")
	s.Logger = slog.New(h)
	p := start(t, s)
	waitDone(t, p)

	want := []string{
		"INFO hello",
		"INFO world",
		"ERROR panic: boom", // from here on a crash report: all Error
		"ERROR ",
		"ERROR goroutine 1 [running]:",
		"ERROR no newline",
	}
	if diff := cmp.Diff(want, h.records()); diff != "" {
		t.Errorf("log records (-want +got):\n%s", diff)
	}
}

func TestSubprocess_StdoutDrainedAfterExit(t *testing.T) {
	p := start(t, child(t, "stdout-flood"))
	got, err := io.ReadAll(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := bigPayload(); !bytes.Equal(got, want) {
		t.Errorf("read %d bytes of stdout, want the %d the worker wrote", len(got), len(want))
	}
	waitDone(t, p)
	if diff := cmp.Diff(transport.ExitStatus{Code: 0}, p.Exit()); diff != "" {
		t.Errorf("Exit (-want +got):\n%s", diff)
	}
}

func TestSubprocess_StartErrors(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		ctx    context.Context
		s      *transport.Subprocess
		wantIs error
	}{
		{"missing binary", context.Background(), &transport.Subprocess{Path: "/nonexistent/tproxy-worker"}, fs.ErrNotExist},
		{"not in PATH", context.Background(), &transport.Subprocess{Path: "tproxy-no-such-worker"}, exec.ErrNotFound},
		{"missing dir", context.Background(), &transport.Subprocess{Path: exe, Dir: "/nonexistent/dir"}, fs.ErrNotExist},
		{"cancelled ctx", cancelled, &transport.Subprocess{Path: exe}, context.Canceled},
		{"empty path", context.Background(), &transport.Subprocess{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.s.Start(tt.ctx)
			if err == nil {
				p.Close()
				t.Fatal("Start succeeded")
			}
			if p != nil {
				t.Errorf("Start returned a Process with error %v", err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Start error %v is not %v", err, tt.wantIs)
			}
			if tt.s.Path != "" && !strings.Contains(err.Error(), tt.s.Path) {
				t.Errorf("Start error %q does not name the binary", err)
			}
		})
	}
}
