package transport_test

import (
	"bufio"
	"context"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy/transport"
)

// echoServe is an in-memory worker that echoes lines until its input ends.
func echoServe(_ context.Context, rw io.ReadWriteCloser) error {
	sc := bufio.NewScanner(rw)
	for sc.Scan() {
		if _, err := io.WriteString(rw, sc.Text()+"\n"); err != nil {
			return err
		}
	}
	return sc.Err()
}

func TestClose_IdempotentAndConcurrent(t *testing.T) {
	tests := []struct {
		name string
		tr   func(t *testing.T) transport.Transport
	}{
		{"Subprocess", func(t *testing.T) transport.Transport { return child(t, "echo") }},
		{"InMemory", func(*testing.T) transport.Transport { return &transport.InMemory{Serve: echoServe} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, tt.tr(t))
			errs := make([]error, 8)
			var wg sync.WaitGroup
			for i := range errs {
				wg.Go(func() { errs[i] = p.Close() })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("Close #%d = %v", i, err)
				}
			}
			if err := p.Close(); err != nil {
				t.Errorf("Close after Close = %v", err)
			}
			if err := p.CloseWrite(); err != nil {
				t.Errorf("CloseWrite after Close = %v", err)
			}
			if !p.Exit().Success() {
				t.Errorf("Exit = %v, want success", p.Exit())
			}
		})
	}
}

func TestKillEndsAHungWorkerAtOnce(t *testing.T) {
	for name, tr := range map[string]transport.Transport{
		"subprocess": child(t, "ignore-term"),
		"in-memory": &transport.InMemory{TermTimeout: 5 * time.Second, Serve: func(ctx context.Context, rw io.ReadWriteCloser) error {
			// Hung: ignores its context, blocked in a read of its input.
			var b [1]byte
			for {
				if _, err := rw.Read(b[:]); err != nil {
					return err
				}
			}
		}},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := tr.Start(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			k, ok := p.(transport.Killer)
			if !ok {
				t.Fatalf("%T does not implement transport.Killer", p)
			}
			if err := k.Kill(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.Done():
			default:
				t.Error("Kill returned before the worker ended")
			}
			if name == "subprocess" {
				if st := p.Exit(); st.Signal != syscall.SIGKILL {
					t.Errorf("exit %v, want signal: killed", st)
				}
			}
			p.Close()
		})
	}
}

// TestClose_StopsReadingFirst: a worker blocked writing to a stdout the
// host no longer reads, deaf to its stdin closing, gets a broken pipe as
// Close begins and exits; Close returns then, not after CloseTimeout.
func TestClose_StopsReadingFirst(t *testing.T) {
	tests := []struct {
		name string
		tr   transport.Transport
	}{
		{"Subprocess", func() transport.Transport {
			s := child(t, "stdout-forever")
			s.CloseTimeout, s.TermTimeout = time.Hour, time.Hour
			return s
		}()},
		{"InMemory", &transport.InMemory{CloseTimeout: time.Hour, TermTimeout: time.Hour,
			Serve: func(_ context.Context, rw io.ReadWriteCloser) error {
				for {
					if _, err := io.WriteString(rw, "nobody reads this\n"); err != nil {
						return err
					}
				}
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, tt.tr)
			// Read a little, to be sure the worker writes; then stop.
			if _, err := io.ReadFull(p, make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
			closed := make(chan error, 1)
			go func() { closed <- p.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Errorf("Close = %v", err)
				}
			case <-time.After(10 * time.Second): // a hang guard, far below the hour
				p.(transport.Killer).Kill() // lets Close return, for the cleanup
				t.Fatal("Close still waiting 10 s in: it did not stop reading the worker's stdout")
			}
			if st := p.Exit(); st.Signal == syscall.SIGTERM || st.Signal == syscall.SIGKILL {
				t.Errorf("exit %v: the ladder's signals ended the worker, not the broken pipe", st)
			}
		})
	}
}
