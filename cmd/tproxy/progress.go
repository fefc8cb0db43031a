package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/logsink"
)

// ANSI escapes of the terminal view: return to the line's start and erase
// it, so the status line is redrawn in place.
const clearLine = "\r\x1b[K"

// redrawEvery is how often the status line is redrawn on a terminal: fast
// enough to look live, slow enough not to cost the run anything.
const redrawEvery = 200 * time.Millisecond

// progress is the live view of a run. It is a logsink.Sink, so the host
// feeds it every event as it is persisted. Each step that ends gets one
// final line. On a terminal a status line under them shows the step
// running, the events per second and the elapsed time, redrawn in place;
// on a pipe there is no status line and no escape sequence, only the
// final lines.
//
// For a fan-out (run on a directory) it shows sessions instead of steps:
// see session and many.
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time

	mu       sync.Mutex
	step     string // the step running, "" between steps
	events   int64
	rateAt   time.Time // when rate was last computed
	rateBase int64     // events at rateAt
	rate     float64   // events per second over the last redraw interval
	status   string    // the fan-out's status line, when not a single run
	shown    bool      // the status line is on screen
	closed   bool
	aboves   []*aboveWriter
	stop     chan struct{}
	done     chan struct{}
}

var _ logsink.Sink = (*progress)(nil)

func newProgress(w io.Writer, tty bool) *progress {
	now := time.Now()
	p := &progress{w: w, tty: tty, start: now, rateAt: now}
	if tty {
		p.stop, p.done = make(chan struct{}), make(chan struct{})
		go p.redrawLoop()
	}
	return p
}

// redrawLoop redraws the status line until Close. A ticker, not a sleep:
// the run does not wait for it.
func (p *progress) redrawLoop() {
	defer close(p.done)
	t := time.NewTicker(redrawEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			p.mu.Lock()
			if d := now.Sub(p.rateAt); d > 0 {
				p.rate = float64(p.events-p.rateBase) / d.Seconds()
			}
			p.rateAt, p.rateBase = now, p.events
			p.drawLocked()
			p.mu.Unlock()
		}
	}
}

// Close stops the redraws and erases the status line; a second Close
// does nothing.
func (p *progress) Close() {
	p.mu.Lock()
	closed := p.closed
	p.closed = true
	p.mu.Unlock()
	if closed {
		return
	}
	if p.tty {
		close(p.stop)
		<-p.done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.aboves {
		a.flushLocked()
	}
	p.eraseLocked()
}

// above returns a writer to w (stderr, say) whose lines appear above the
// status line rather than through it: it writes whole lines only, erasing
// the status line first and redrawing it after. A partial last line is
// written at Close.
func (p *progress) above(w io.Writer) io.Writer {
	if !p.tty {
		return w
	}
	a := &aboveWriter{p: p, w: w}
	p.mu.Lock()
	p.aboves = append(p.aboves, a)
	p.mu.Unlock()
	return a
}

// aboveWriter is what progress.above returns.
type aboveWriter struct {
	p       *progress
	w       io.Writer
	partial []byte
}

func (a *aboveWriter) Write(b []byte) (int, error) {
	a.p.mu.Lock()
	defer a.p.mu.Unlock()
	a.partial = append(a.partial, b...)
	i := bytes.LastIndexByte(a.partial, '\n')
	if i < 0 {
		return len(b), nil
	}
	a.p.eraseLocked()
	_, err := a.w.Write(a.partial[:i+1])
	a.partial = append(a.partial[:0], a.partial[i+1:]...)
	if !a.p.closed {
		a.p.drawLocked()
	}
	return len(b), err
}

func (a *aboveWriter) flushLocked() {
	if len(a.partial) > 0 {
		a.p.eraseLocked()
		a.w.Write(append(a.partial, '\n'))
		a.partial = nil
	}
}

func (p *progress) eraseLocked() {
	if p.shown {
		io.WriteString(p.w, clearLine)
		p.shown = false
	}
}

func (p *progress) drawLocked() {
	if !p.tty {
		return
	}
	var b strings.Builder
	b.WriteString(clearLine)
	elapsed := time.Since(p.start).Truncate(100 * time.Millisecond)
	switch {
	case p.status != "":
		b.WriteString(p.status)
	case p.step != "":
		fmt.Fprintf(&b, "▶ %s", p.step)
	default:
		b.WriteString("…")
	}
	fmt.Fprintf(&b, "  %d events  %.0f events/s  %v", p.events, p.rate, elapsed)
	io.WriteString(p.w, b.String())
	p.shown = true
}

// Println writes a final line above the status line.
func (p *progress) Println(a ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.printlnLocked(fmt.Sprint(a...))
}

func (p *progress) printlnLocked(line string) {
	p.eraseLocked()
	io.WriteString(p.w, line+"\n")
	if !p.closed {
		p.drawLocked()
	}
}

// Event implements logsink.Sink: a step's start updates the status line,
// its end prints its line.
func (p *progress) Event(_ context.Context, e tproxy.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events++
	switch e.Name {
	case "step_start":
		p.step = e.StepID
		if p.tty {
			p.drawLocked()
		} else {
			p.printlnLocked(fmt.Sprintf("▶ %s started (driver %v)", e.StepID, e.Data["driver"]))
		}
	case "step_complete":
		p.step = ""
		p.printlnLocked(fmt.Sprintf("✓ %s complete: %v rows in %s", e.StepID, orZero(e.Data["rows_processed"]), msString(e.Data["duration_ms"])))
	case "step_failed":
		p.step = ""
		p.printlnLocked(fmt.Sprintf("✗ %s failed: %v: %v", e.StepID, e.Data["error_type"], e.Data["message"]))
	case "step_skipped":
		p.printlnLocked(fmt.Sprintf("- %s skipped: %v", e.StepID, orZero(e.Data["reason"])))
	}
	return nil
}

// Metric implements logsink.Sink; metrics are counted in show and report,
// not here.
func (p *progress) Metric(context.Context, tproxy.Metric) error { return nil }

// Log implements logsink.Sink. Log records are the session's to keep;
// the live view is about steps, so it shows none.
func (p *progress) Log(context.Context, tproxy.LogRecord) error { return nil }

// Flush implements logsink.Sink.
func (p *progress) Flush() error { return nil }

// many returns the fan-out's OnProgress: the status line counts sessions.
func (p *progress) many(pr host.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = pr.Events
	p.status = fmt.Sprintf("%d/%d sessions done, %d running, %d failed", pr.Done(), pr.Total, pr.Running, pr.Failed+pr.Cancelled)
	if !p.tty {
		p.printlnLocked(p.status)
	} else {
		p.drawLocked()
	}
}

// orZero prints a missing value as 0 rather than <nil>.
func orZero(v any) any {
	if v == nil {
		return 0
	}
	return v
}

// msString prints a duration in milliseconds, as events carry them, as a
// Go duration.
func msString(v any) string {
	var ms float64
	switch x := v.(type) {
	case float64:
		ms = x
	case int64:
		ms = float64(x)
	case int:
		ms = float64(x)
	default:
		return "?"
	}
	return fmtDuration(time.Duration(ms * float64(time.Millisecond)))
}

// fmtDuration rounds d for people: milliseconds below 10s, tenths of a
// second below a minute, seconds above.
func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < 10*time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}
