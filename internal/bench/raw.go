package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

// PingLine is the line RawEcho sends: a ping request as a host writes it.
const PingLine = `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"data":"bench"}}` + "\n"

// EventLineSize is the size of one "tick" event notification on the wire,
// newline included, so that the raw stream moves lines of the same size.
func EventLineSize() int {
	msg := map[string]any{"jsonrpc": "2.0", "method": tproxy.MethodEvent, "params": tproxy.Event{
		Name: "tick", Timestamp: time.Now().UTC(), StepID: "stream", Data: map[string]any{"i": 123456},
	}}
	b, err := json.Marshal(msg)
	if err != nil {
		panic(err)
	}
	return len(b) + 1
}

// rawChild is a child process talking over plain pipes.
type rawChild struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startRaw(role string) (*rawChild, error) {
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
	return &rawChild{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 64<<10)}, nil
}

func (r *rawChild) close() error {
	r.in.Close()
	return r.cmd.Wait()
}

// RawEcho is the floor for a ping: a child process that sends every line
// back, over plain pipes.
type RawEcho struct{ c *rawChild }

// StartRawEcho starts the echoing child.
func StartRawEcho() (*RawEcho, error) {
	c, err := startRaw("echo")
	if err != nil {
		return nil, fmt.Errorf("bench: start raw echo: %w", err)
	}
	return &RawEcho{c}, nil
}

// RoundTrip sends PingLine and reads it back.
func (r *RawEcho) RoundTrip() error {
	if _, err := io.WriteString(r.c.in, PingLine); err != nil {
		return err
	}
	_, err := r.c.out.ReadSlice('\n')
	return err
}

// Close ends the child.
func (r *RawEcho) Close() error { return r.c.close() }

// RawStream is the floor for streaming events to a file: a child process
// writes lines of EventLineSize bytes, one write per line, and this
// process appends each to a buffered events.jsonl.
type RawStream struct {
	c    *rawChild
	f    *os.File
	w    *bufio.Writer
	size int
}

// StartRawStream starts the writing child; the file is created in dir.
func StartRawStream(dir string) (*RawStream, error) {
	f, err := os.Create(filepath.Join(dir, logsink.EventsFile))
	if err != nil {
		return nil, err
	}
	c, err := startRaw("stream")
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: start raw stream: %w", err)
	}
	return &RawStream{c: c, f: f, w: bufio.NewWriterSize(f, logsink.DefaultBufferSize), size: EventLineSize()}, nil
}

// Stream has the child write n lines and appends them to the file, which
// it flushes at the end, as a host flushes after a step.
func (r *RawStream) Stream(n int) error {
	if _, err := fmt.Fprintf(r.c.in, "%d %d\n", n, r.size); err != nil {
		return err
	}
	got := 0
	for {
		line, err := r.c.out.ReadSlice('\n')
		if err != nil {
			return err
		}
		if string(line) == "done\n" {
			break
		}
		if _, err := r.w.Write(line); err != nil {
			return err
		}
		got++
	}
	if got != n {
		return fmt.Errorf("bench: raw stream: got %d lines, want %d", got, n)
	}
	return r.w.Flush()
}

// Close ends the child and closes the file.
func (r *RawStream) Close() error {
	return errors.Join(r.c.close(), r.f.Close())
}
