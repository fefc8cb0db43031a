package worker_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/worker"
)

// TestServeTakesEveryShape: messages that the fast path leaves alone are
// decoded as jsonrpc2 decodes them: requests in any valid shape are
// answered, and a response from the host is dropped.
func TestServeTakesEveryShape(t *testing.T) {
	host := serveLines(t)
	for _, c := range []struct{ send, want string }{
		{`{"jsonrpc":"2.0","id":1,"method":"pi\u006eg","params":{"data":"escaped"}}`, `"echo":"escaped"`},
		{`{"jsonrpc":"2.0","id":"two","method":"ping","params":{"data":"string id"}}`, `"id":"two"`},
		{`{"jsonrpc":"2.0","id":1,"result":{}}`, ""}, // dropped: the next line is answered
		{`{"params":{"data":"reordered"},"method":"ping","id":3,"jsonrpc":"2.0","x":1}`, `"echo":"reordered"`},
		{`{"jsonrpc":"2.0","id":4,"method":"ping","params":null}`, `"id":4,"result"`},
	} {
		host.send(c.send)
		if c.want == "" {
			continue
		}
		if line := host.next(); !strings.Contains(line, c.want) {
			t.Fatalf("sent %s: got %q; want a line with %s", c.send, line, c.want)
		}
	}
	host.end()
}

// TestServeAnswersBadInput pins docs/protocol.md section 12: what is not a
// request is answered with -32700 or -32600 (with "id": null when the id
// cannot be read), and the worker goes on serving.
func TestServeAnswersBadInput(t *testing.T) {
	host := serveLines(t, func(w *worker.Worker) { w.MaxFrameSize = 512 })
	for _, c := range []struct{ send, want string }{
		{"this is not json", `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,`},
		{"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"data\":\"\xff\"}}", `"id":null,"error":{"code":-32700,`},
		{`{"jsonrpc":"2.0","id":1,"method":"ping"`, `"id":null,"error":{"code":-32700,`},
		{`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, `"id":null,"error":{"code":-32600,"message":"invalid request: the message is a batch`},
		{`42`, `"id":null,"error":{"code":-32600,`},
		{`"ping"`, `"id":null,"error":{"code":-32600,`},
		{`null`, `"id":null,"error":{"code":-32600,`},
		{`{"jsonrpc":"1.0","id":7,"method":"ping"}`, `"id":7,"error":{"code":-32600,"message":"invalid request: \"jsonrpc\" is \"1.0\"`},
		{`{"id":8,"method":"ping"}`, `"id":8,"error":{"code":-32600,"message":"invalid request: the \"jsonrpc\" member is missing`},
		{`{"jsonrpc":"2.0","id":9}`, `"id":9,"error":{"code":-32600,`},
		{`{"jsonrpc":"2.0","id":"ten","method":7}`, `"id":"ten","error":{"code":-32600,`},
		{`{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}`, `"id":null,"error":{"code":-32600,`},
		{`{"jsonrpc":"2.0","id":-1,"method":"ping"}`, `"id":null,"error":{"code":-32600,`},
		{`{"jsonrpc":"2.0","id":12,"method":"ping","params":"x"}`, `"id":12,"error":{"code":-32600,`},
		{`{"jsonrpc":"2.0","id":13,"method":"ping","result":1}`, `"id":13,"error":{"code":-32600,`},
		{`{"jsonrpc":"2.0","id":14,"method":"no_such_method"}`, `"id":14,"error":{"code":-32601,`},
		{`{"jsonrpc":"2.0","method":"no_such_notification"}`, ""},                // ignored
		{`{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":[1]}}`, ""}, // ignored
		{`{"jsonrpc":"2.0","method":"$/cancelRequest","params":7}`, `"id":null,"error":{"code":-32600,`},
		{`{"jsonrpc":"2.0","id":15,"method":"ping","params":{"data":"` + strings.Repeat("x", 512) + `"}}`, `"id":null,"error":{"code":-32600,"message":"invalid request: the frame is`},
		{`{"jsonrpc":"2.0","id":16,"method":"ping"}`, `"id":16,"result":{"status":"pong"`},
		// An error too big for the cap is sent cut short, not left out.
		{`{"jsonrpc":"2.0","id":17,"method":"` + strings.Repeat(`\"`, 200) + `"}`, `"id":17,"error":{"code":-32601,`},
	} {
		host.send(c.send)
		if c.want == "" {
			continue
		}
		if line := host.next(); !strings.Contains(line, c.want) {
			t.Errorf("sent %q:\n got %s\nwant a line with %s", c.send, line, c.want)
		}
	}
	host.end()
}

// lineHost is the host's end of a worker served over pipes, speaking lines.
type lineHost struct {
	t     *testing.T
	w     io.WriteCloser
	lines *bufio.Reader
	done  chan error
}

// serveLines serves a worker over pipes; configure adjusts it first.
func serveLines(t *testing.T, configure ...func(*worker.Worker)) *lineHost {
	t.Helper()
	hr, ww := io.Pipe()
	wr, hw := io.Pipe()
	w := worker.New("t", "1")
	w.Logger = slog.New(slog.DiscardHandler)
	for _, c := range configure {
		c(w)
	}
	h := &lineHost{t: t, w: hw, lines: bufio.NewReader(hr), done: make(chan error, 1)}
	go func() {
		h.done <- w.Serve(context.Background(), wiretest.Conn(t, pipeEnd{wr, ww}, wiretest.WorkerFrames))
	}()
	t.Cleanup(func() { hw.Close(); hr.Close() })
	return h
}

func (h *lineHost) send(line string) {
	h.t.Helper()
	if _, err := io.WriteString(h.w, line+"\n"); err != nil {
		h.t.Fatal(err)
	}
}

func (h *lineHost) next() string {
	h.t.Helper()
	line, err := h.lines.ReadString('\n')
	if err != nil {
		h.t.Fatalf("reading the worker's next line: %v", err)
	}
	return line
}

// end closes the worker's input and checks that it answered nothing more
// and that Serve returned nil.
func (h *lineHost) end() {
	h.t.Helper()
	h.w.Close()
	if rest, _ := io.ReadAll(h.lines); len(rest) != 0 {
		h.t.Errorf("the worker wrote more than expected: %q", rest)
	}
	if err := <-h.done; err != nil {
		h.t.Errorf("Serve = %v, want nil", err)
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
			rw := wiretest.Conn(t, conn(wr, ww), wiretest.WorkerFrames)
			go func() { done <- worker.New("t", "1").Serve(ctx, rw) }()
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
