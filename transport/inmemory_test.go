package transport_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy/transport"
)

func TestInMemory_RoundTrip(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p, err := (&transport.InMemory{Serve: echoServe}).Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cancel() // ctx bounds only the start; Serve keeps running

	r := bufio.NewReader(p)
	for _, msg := range []string{"hello", "ünïcödé"} {
		if _, err := fmt.Fprintln(p, msg); err != nil {
			t.Fatal(err)
		}
		if got := readLine(t, r); got != msg {
			t.Errorf("echo = %q, want %q", got, msg)
		}
	}
	if err := p.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, p) // echoServe returns on input EOF
	if _, err := io.ReadAll(r); err != nil {
		t.Errorf("read after worker returned: %v, want EOF", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if diff := cmp.Diff(transport.ExitStatus{}, p.Exit()); diff != "" {
		t.Errorf("Exit (-want +got):\n%s", diff)
	}
}

func TestInMemory_ExitStatus(t *testing.T) {
	tests := []struct {
		name     string
		serve    func(context.Context, io.ReadWriteCloser) error
		want     transport.ExitStatus
		wantTail []string
	}{
		{
			name:  "returns nil",
			serve: func(context.Context, io.ReadWriteCloser) error { return nil },
			want:  transport.ExitStatus{Code: 0},
		},
		{
			name:  "returns an error",
			serve: func(context.Context, io.ReadWriteCloser) error { return errors.New("boom") },
			want:  transport.ExitStatus{Code: 1, Reason: "boom"},
		},
		{
			name:     "panics",
			serve:    func(context.Context, io.ReadWriteCloser) error { panic("kaboom") },
			want:     transport.ExitStatus{Code: 2, Reason: "panic: kaboom"},
			wantTail: []string{"panic: kaboom", "goroutine ", "inmemory_test.go"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, &transport.InMemory{Serve: tt.serve})
			waitDone(t, p)
			if diff := cmp.Diff(tt.want, p.Exit()); diff != "" {
				t.Errorf("Exit (-want +got):\n%s", diff)
			}
			tail := p.StderrTail()
			for _, want := range tt.wantTail {
				if !strings.Contains(tail, want) {
					t.Errorf("StderrTail does not contain %q:\n%s", want, tail)
				}
			}
			if len(tt.wantTail) == 0 && tail != "" {
				t.Errorf("StderrTail = %q, want empty", tail)
			}
			if _, err := io.ReadAll(p); err != nil {
				t.Errorf("read after worker returned: %v, want EOF", err)
			}
			if _, err := p.Write([]byte("x")); err == nil {
				t.Error("Write to a returned worker succeeded")
			}
			if err := p.Close(); err != nil {
				t.Errorf("Close = %v", err)
			}
		})
	}
}

func TestInMemory_CloseLadder(t *testing.T) {
	tests := []struct {
		name       string
		serve      func(context.Context, io.ReadWriteCloser) error
		closeAfter time.Duration
		termAfter  time.Duration
		want       transport.ExitStatus
	}{
		{
			name:       "returns on input EOF",
			serve:      echoServe,
			closeAfter: 10 * time.Second, termAfter: 10 * time.Second,
			want: transport.ExitStatus{Code: 0},
		},
		{
			name: "ignores input EOF, returns on cancel",
			serve: func(ctx context.Context, _ io.ReadWriteCloser) error {
				<-ctx.Done()
				return ctx.Err()
			},
			closeAfter: 20 * time.Millisecond, termAfter: 10 * time.Second,
			want: transport.ExitStatus{Code: 1, Reason: context.Canceled.Error()},
		},
		{
			// Close stops reading first: the blocked write fails at once,
			// long before the ladder's later rungs.
			name: "ignores input EOF and cancel, blocked writing",
			serve: func(_ context.Context, rw io.ReadWriteCloser) error {
				for {
					if _, err := io.WriteString(rw, "nobody reads this\n"); err != nil {
						return err
					}
				}
			},
			closeAfter: time.Hour, termAfter: time.Hour,
			want: transport.ExitStatus{Code: 1, Reason: io.ErrClosedPipe.Error()},
		},
		{
			// Only the last rung, which breaks the input pipe, ends it.
			name: "ignores input EOF and cancel, reading",
			serve: func(_ context.Context, rw io.ReadWriteCloser) error {
				var b [1]byte
				for {
					if _, err := rw.Read(b[:]); err != nil && err != io.EOF {
						return err
					}
					time.Sleep(time.Millisecond)
				}
			},
			closeAfter: 20 * time.Millisecond, termAfter: 200 * time.Millisecond,
			want: transport.ExitStatus{Code: 1, Reason: io.ErrClosedPipe.Error()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := start(t, &transport.InMemory{Serve: tt.serve, CloseTimeout: tt.closeAfter, TermTimeout: tt.termAfter})
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

func TestInMemory_CloseReportsAWorkerThatDoesNotReturn(t *testing.T) {
	release := make(chan struct{})
	p, err := (&transport.InMemory{
		Serve: func(context.Context, io.ReadWriteCloser) error {
			<-release // ignores input, cancel and pipes
			return nil
		},
		CloseTimeout: 10 * time.Millisecond,
		TermTimeout:  10 * time.Millisecond,
	}).Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(release)
		waitDone(t, p) // leave no goroutine behind for goleak
	})

	err = p.Close()
	if err == nil || !strings.Contains(err.Error(), "did not return") {
		t.Fatalf("Close = %v, want an error saying the worker did not return", err)
	}
	if again := p.Close(); again != err {
		t.Errorf("second Close = %v, want the same error %v", again, err)
	}
	select {
	case <-p.Done():
		t.Error("Done is closed although Serve has not returned")
	default:
	}
}

func TestInMemory_StartErrors(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&transport.InMemory{}).Start(context.Background()); err == nil {
		t.Error("Start with nil Serve succeeded")
	}
	if _, err := (&transport.InMemory{Serve: echoServe}).Start(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with cancelled ctx = %v, want context.Canceled", err)
	}
}
