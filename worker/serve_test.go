package worker_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy/worker"
)

// TestServeTakesEveryShape: messages that the fast path leaves alone are
// decoded as jsonrpc2 decodes them: requests in any valid shape are
// answered, a response from the host is dropped, and a message that is
// neither ends the session with an error.
func TestServeTakesEveryShape(t *testing.T) {
	hr, ww := io.Pipe()
	wr, hw := io.Pipe()
	done := make(chan error, 1)
	w := worker.New("t", "1")
	w.Logger = slog.New(slog.DiscardHandler)
	go func() { done <- w.Serve(context.Background(), pipeEnd{wr, ww}) }()
	defer hw.Close()
	lines := bufio.NewReader(hr)
	for _, c := range []struct{ send, want string }{
		{`{"jsonrpc":"2.0","id":1,"method":"pi\u006eg","params":{"data":"escaped"}}`, `"echo":"escaped"`},
		{`{"jsonrpc":"2.0","id":"two","method":"ping","params":{"data":"string id"}}`, `"id":"two"`},
		{`{"jsonrpc":"2.0","id":1,"result":{}}`, ""}, // dropped: the next line is answered
		{`{"params":{"data":"reordered"},"method":"ping","id":3,"jsonrpc":"2.0","x":1}`, `"echo":"reordered"`},
	} {
		if _, err := io.WriteString(hw, c.send+"\n"); err != nil {
			t.Fatal(err)
		}
		if c.want == "" {
			continue
		}
		line, err := lines.ReadString('\n')
		if err != nil || !strings.Contains(line, c.want) {
			t.Fatalf("sent %s: got %q, %v; want a line with %s", c.send, line, err, c.want)
		}
	}
	io.WriteString(hw, `{"jsonrpc":"2.0","id":4}`+"\n")
	if rest, _ := io.ReadAll(hr); len(rest) != 0 {
		t.Errorf("the worker answered a message that is neither request nor response: %q", rest)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "request or response") {
		t.Errorf("Serve = %v, want a protocol error", err)
	}
}

// closeReader is a connection whose reads CloseRead interrupts, as
// transport.InMemory's and a socket's are: the worker reads it on Serve's
// own goroutine.
type closeReader struct {
	*io.PipeReader
	io.WriteCloser
}

func (c closeReader) Close() error     { return c.WriteCloser.Close() }
func (c closeReader) CloseRead() error { return c.PipeReader.Close() }

// TestServeReturnsWhenCtxEnds: an idle worker returns from Serve once its
// ctx ends, whether its reads can be interrupted or not, and closes its
// output.
func TestServeReturnsWhenCtxEnds(t *testing.T) {
	for name, conn := range map[string]func(r *io.PipeReader, w *io.PipeWriter) io.ReadWriteCloser{
		"CloseRead": func(r *io.PipeReader, w *io.PipeWriter) io.ReadWriteCloser { return closeReader{r, w} },
		"plain":     func(r *io.PipeReader, w *io.PipeWriter) io.ReadWriteCloser { return pipeEnd{r, w} },
	} {
		t.Run(name, func(t *testing.T) {
			hr, ww := io.Pipe()
			wr, hw := io.Pipe()
			defer hw.Close() // ends a plain connection's reader
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- worker.New("t", "1").Serve(ctx, conn(wr, ww)) }()
			io.WriteString(hw, `{"jsonrpc":"2.0","id":1,"method":"ping"}`+"\n")
			lines := bufio.NewReader(hr)
			if line, err := lines.ReadString('\n'); err != nil || !strings.Contains(line, `"pong"`) {
				t.Fatalf("ping: %q, %v", line, err)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve = %v, want nil", err)
				}
			case <-time.After(10 * time.Second): // a hang guard
				t.Fatal("Serve did not return after its ctx ended")
			}
			if rest, err := io.ReadAll(lines); err != nil || len(rest) != 0 {
				t.Errorf("after Serve: read %q, %v; want EOF", rest, err)
			}
		})
	}
}
