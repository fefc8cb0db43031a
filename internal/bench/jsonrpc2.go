package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

// The jsonrpc2 baselines: sourcegraph/jsonrpc2's Conn on both sides, with
// its own newline-delimited JSON stream (jsonrpc2.NewPlainObjectStream),
// over the same kind of pipes to a child process as tproxy's, and with
// nothing of tproxy but its message types. They say what tproxy costs
// compared with the library it is built on.

// RPCPing is the jsonrpc2 floor for a ping: Conn.Call of "ping" to a
// child process whose Conn answers it with a synchronous handler (the
// same PingResult a tproxy worker sends).
type RPCPing struct{ c *rpcChild }

// StartRPCPing starts the answering child.
func StartRPCPing() (*RPCPing, error) {
	c, err := startRPC("jsonrpc2-ping", jsonrpc2.HandlerWithError(func(context.Context, *jsonrpc2.Conn, *jsonrpc2.Request) (any, error) {
		return nil, &jsonrpc2.Error{Code: jsonrpc2.CodeMethodNotFound, Message: "the host serves nothing"}
	}))
	if err != nil {
		return nil, fmt.Errorf("bench: start jsonrpc2 ping: %w", err)
	}
	return &RPCPing{c}, nil
}

// Call is one ping round trip.
func (r *RPCPing) Call() error {
	var res tproxy.PingResult
	if err := r.c.conn.Call(context.Background(), tproxy.MethodPing,
		tproxy.PingParams{Data: "bench", Protocol: tproxy.ProtocolVersion}, &res); err != nil {
		return err
	}
	if res.Echo != "bench" {
		return fmt.Errorf("bench: jsonrpc2 ping echoed %q", res.Echo)
	}
	return nil
}

// Close ends the child.
func (r *RPCPing) Close() error { return r.c.close() }

// RPCStream is the jsonrpc2 floor for streaming events to a file: a child
// process sends event notifications with Conn.Notify (the same
// tproxy.Event a worker sends for Step.Event), and this process's Conn
// handler appends each notification's params, as a line, to a buffered
// events.jsonl.
type RPCStream struct {
	c   *rpcChild
	f   *os.File
	w   *bufio.Writer
	got int
	err error
}

// StartRPCStream starts the notifying child; the file is created in dir.
func StartRPCStream(dir string) (*RPCStream, error) {
	f, err := os.Create(filepath.Join(dir, logsink.EventsFile))
	if err != nil {
		return nil, err
	}
	s := &RPCStream{f: f, w: bufio.NewWriterSize(f, logsink.DefaultBufferSize)}
	// The handler runs in the Conn's read loop, one message after
	// another, so when Call returns every notification sent before its
	// response has been written to w.
	s.c, err = startRPC("jsonrpc2-notify", handlerFunc(func(_ context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) {
		if !req.Notif || req.Method != tproxy.MethodEvent || req.Params == nil || s.err != nil {
			return
		}
		if _, err := s.w.Write(*req.Params); err != nil {
			s.err = err
			return
		}
		if err := s.w.WriteByte('\n'); err != nil {
			s.err = err
			return
		}
		s.got++
	}))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: start jsonrpc2 stream: %w", err)
	}
	return s, nil
}

// Stream has the child send n event notifications, and returns once they
// are all in the file, flushed.
func (s *RPCStream) Stream(n int) error {
	s.got, s.err = 0, nil
	var sent int
	if err := s.c.conn.Call(context.Background(), "stream", n, &sent); err != nil {
		return err
	}
	if s.err != nil {
		return s.err
	}
	if s.got != n || sent != n {
		return fmt.Errorf("bench: jsonrpc2 stream: %d events written, %d sent, want %d", s.got, sent, n)
	}
	return s.w.Flush()
}

// Close ends the child and closes the file.
func (s *RPCStream) Close() error {
	return errors.Join(s.c.close(), s.f.Close())
}

type handlerFunc func(context.Context, *jsonrpc2.Conn, *jsonrpc2.Request)

func (h handlerFunc) Handle(ctx context.Context, c *jsonrpc2.Conn, req *jsonrpc2.Request) {
	h(ctx, c, req)
}

// rpcChild is a child process with a jsonrpc2.Conn to it.
type rpcChild struct {
	cmd  *exec.Cmd
	conn *jsonrpc2.Conn
	rwc  *pipes
}

// pipes is the child's stdout and stdin as one stream; eof is closed once
// a read has failed, so that close knows the Conn's read loop has ended.
type pipes struct {
	r    io.Reader
	w    io.WriteCloser
	eof  chan struct{}
	once sync.Once
}

func (p *pipes) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err != nil {
		p.once.Do(func() { close(p.eof) })
	}
	return n, err
}

func (p *pipes) Write(b []byte) (int, error) { return p.w.Write(b) }

// Close closes the child's stdin; the child ends, and its stdout with it.
func (p *pipes) Close() error {
	p.w.Close()
	return nil
}

func startRPC(role string, h jsonrpc2.Handler) (*rpcChild, error) {
	cmd, err := self(role, "")
	if err != nil {
		return nil, err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &pipes{r: out, w: in, eof: make(chan struct{})}
	conn := jsonrpc2.NewConn(context.Background(), jsonrpc2.NewPlainObjectStream(p), h)
	return &rpcChild{cmd: cmd, conn: conn, rwc: p}, nil
}

func (c *rpcChild) close() error {
	c.conn.Close()
	select {
	case <-c.rwc.eof:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.rwc.eof
	}
	return c.cmd.Wait()
}

// stdio is this process's stdin and stdout as one stream.
type stdio struct{}

func (stdio) Read(b []byte) (int, error)  { return os.Stdin.Read(b) }
func (stdio) Write(b []byte) (int, error) { return os.Stdout.Write(b) }
func (stdio) Close() error                { return nil }

// serveRPC runs a Conn with h over stdin and stdout until the parent
// closes stdin.
func serveRPC(h jsonrpc2.Handler) error {
	conn := jsonrpc2.NewConn(context.Background(), jsonrpc2.NewPlainObjectStream(stdio{}), h)
	<-conn.DisconnectNotify()
	return nil
}

// rpcPingChild answers "ping" as a tproxy worker does, in its Conn's read
// loop, and nothing else.
func rpcPingChild() error {
	info := Worker().Info()
	return serveRPC(jsonrpc2.HandlerWithError(func(_ context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) (any, error) {
		if req.Method != tproxy.MethodPing {
			return nil, &jsonrpc2.Error{Code: jsonrpc2.CodeMethodNotFound, Message: req.Method}
		}
		var p tproxy.PingParams
		if req.Params != nil {
			if err := json.Unmarshal(*req.Params, &p); err != nil {
				return nil, &jsonrpc2.Error{Code: jsonrpc2.CodeInvalidParams, Message: err.Error()}
			}
		}
		return &tproxy.PingResult{Status: "pong", Echo: p.Data, Timestamp: time.Now().UTC(),
			Protocol: tproxy.ProtocolVersion, Worker: info}, nil
	}))
}

// rpcNotifyChild answers "stream" n by sending n "tick" event
// notifications, then n.
func rpcNotifyChild() error {
	return serveRPC(jsonrpc2.HandlerWithError(func(ctx context.Context, c *jsonrpc2.Conn, req *jsonrpc2.Request) (any, error) {
		var n int
		if req.Method != "stream" || req.Params == nil || json.Unmarshal(*req.Params, &n) != nil {
			return nil, &jsonrpc2.Error{Code: jsonrpc2.CodeInvalidRequest, Message: req.Method}
		}
		for i := range n {
			e := tproxy.Event{Name: "tick", Timestamp: time.Now().UTC(), StepID: "stream", Data: map[string]any{"i": i}}
			if err := c.Notify(ctx, tproxy.MethodEvent, e); err != nil {
				return nil, err
			}
		}
		return n, nil
	}))
}
