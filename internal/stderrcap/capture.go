// Package stderrcap is what every transport does with a worker's stderr:
// it keeps a bounded tail for transport.Process.StderrTail, copies every
// byte to an optional writer, and logs each line to an optional logger
// (Info, then Error from a line starting "panic:" or "fatal error:" on).
package stderrcap

import (
	"io"
	"log/slog"
)

// Capture is one worker's stderr handling, fed by Drain (from a pipe) or
// by Write (from chunks, as transport/e2b receives them).
//
// Write must be called from one goroutine at a time; Tail may be called
// from any goroutine.
type Capture struct {
	tail   *tailBuffer
	w      io.Writer
	logger *lineLogger
}

// New returns a capture keeping the last tailSize bytes (16
// KiB when tailSize <= 0). w and logger may be nil; attrs are added to
// every log record.
func New(tailSize int, w io.Writer, logger *slog.Logger, attrs ...slog.Attr) *Capture {
	c := &Capture{tail: newTailBuffer(tailSize), w: w}
	if logger != nil {
		c.logger = &lineLogger{logger: logger, attrs: attrs}
	}
	return c
}

// Write records p. It never fails: a failing writer is dropped, so that a
// broken destination cannot stop the draining of a worker's stderr.
func (c *Capture) Write(p []byte) (int, error) {
	c.tail.Write(p)
	if c.w != nil {
		if _, err := c.w.Write(p); err != nil {
			c.w = nil
		}
	}
	if c.logger != nil {
		c.logger.Write(p)
	}
	return len(p), nil
}

// Flush logs a last line that had no newline. Call it once the worker's
// stderr has ended.
func (c *Capture) Flush() {
	if c.logger != nil {
		c.logger.Flush()
	}
}

// Tail returns the last bytes written, cut at a line or UTF-8 boundary as
// transport.Process.StderrTail promises.
func (c *Capture) Tail() string { return c.tail.String() }
