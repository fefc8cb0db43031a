package transport_test

import (
	"bufio"
	"context"
	"io"
	"sync"
	"testing"

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
