package worker_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strconv"
	"testing"

	"github.com/tproxy/tproxy/worker"
)

// discardConn is a worker connection whose writes cost nothing but the
// call, so that a benchmark over it measures the worker's own CPU.
type discardConn struct {
	r    *io.PipeReader
	resp chan struct{}
}

func (d *discardConn) Read(b []byte) (int, error) { return d.r.Read(b) }
func (d *discardConn) Close() error               { return d.r.Close() }
func (d *discardConn) Write(b []byte) (int, error) {
	// Responses, and only they, end with this member (AppendResponse,
	// and jsonrpc2's error replies with their sorted keys).
	if bytes.HasSuffix(b, []byte(`"jsonrpc":"2.0"}`+"\n")) {
		d.resp <- struct{}{}
	}
	return len(b), nil
}

// BenchmarkStepEvent is the worker's CPU per event a driver emits, from
// Step.Event to the bytes handed to the connection's Write: masking,
// encoding and queueing (not the write itself, nor the pipe).
func BenchmarkStepEvent(b *testing.B) {
	w := worker.New("bench", "1")
	w.RegisterFunc("emit", func(ctx context.Context, s *worker.Step) error {
		n, _ := strconv.Atoi(s.Config()["n"].(string))
		for i := range n {
			if err := s.Event("tick", map[string]any{"i": i}); err != nil {
				return err
			}
		}
		return nil
	})
	pr, pw := io.Pipe()
	conn := &discardConn{r: pr, resp: make(chan struct{}, 16)}
	done := make(chan error, 1)
	go func() { done <- w.Serve(context.Background(), conn) }()
	in := bufio.NewWriter(pw)
	send := func(s string) {
		in.WriteString(s + "\n")
		in.Flush()
		<-conn.resp
	}
	send(`{"jsonrpc":"2.0","id":1,"method":"prepare","params":{"session_id":"b","manifest":{"steps":[]}}}`)
	b.ResetTimer()
	send(`{"jsonrpc":"2.0","id":2,"method":"exec_step","params":{"step_id":"s","driver":"emit","config":{"n":"` + strconv.Itoa(b.N) + `"}}}`)
	b.StopTimer()
	pw.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
