package stderrcap

import (
	"bytes"
	"context"
	"io"
	"log/slog"
)

// maxLogLine caps how much of one stderr line goes into one log record; a
// longer line is logged in pieces.
const maxLogLine = 64 << 10

// Drain copies r into c until r returns an error, then flushes c. c never
// fails a write, so a broken destination cannot stop the draining: a
// worker blocked on a full stderr pipe would hang.
func Drain(r io.Reader, c *Capture) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			c.Write(buf[:n])
		}
		if err != nil {
			break
		}
	}
	c.Flush()
}

// lineLogger logs each line written to it as one record. Like
// hashicorp/go-plugin, it logs at Info until a line starts with "panic:" or
// "fatal error:" and at Error from then on, so a Go worker's crash report
// stands out as a whole. It is not safe for concurrent use.
type lineLogger struct {
	logger  *slog.Logger
	attrs   []slog.Attr
	partial []byte
	crashed bool
}

func (l *lineLogger) Write(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			for len(l.partial) >= maxLogLine {
				l.log(l.partial[:maxLogLine])
				l.partial = append(l.partial[:0], l.partial[maxLogLine:]...)
			}
			return
		}
		if len(l.partial) > 0 {
			l.partial = append(l.partial, p[:i]...)
			l.log(l.partial)
			l.partial = l.partial[:0]
		} else {
			l.log(p[:i])
		}
		p = p[i+1:]
	}
}

// Flush logs a last line that had no newline.
func (l *lineLogger) Flush() {
	if len(l.partial) > 0 {
		l.log(l.partial)
		l.partial = l.partial[:0]
	}
}

func (l *lineLogger) log(line []byte) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	if !l.crashed && (bytes.HasPrefix(line, []byte("panic:")) || bytes.HasPrefix(line, []byte("fatal error:"))) {
		l.crashed = true
	}
	level := slog.LevelInfo
	if l.crashed {
		level = slog.LevelError
	}
	l.logger.LogAttrs(context.Background(), level, string(line), l.attrs...)
}
