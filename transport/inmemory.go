package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"time"

	"github.com/tproxy/tproxy/internal/ladder"
	"github.com/tproxy/tproxy/internal/stderrcap"
)

// errKilled is what an in-memory worker's writes return once Kill broke
// its pipes, if Close had not stopped reading its output before.
var errKilled = errors.New("transport: in-memory worker killed")

// InMemory is a [Transport] that runs the worker as a function in a
// goroutine of the host's process, connected by in-memory pipes. There is
// no binary to build and no subprocess, so it is the transport for unit
// tests: serve the worker runtime (or a fake of it) in Serve and drive it
// from a real host, or test a host against a scripted fake worker.
//
// Serve plays the worker's main: it reads the host's bytes from rw and
// writes its replies to rw. Closing rw closes only the worker-to-host
// direction, so the host reads EOF; rw's CloseRead method ends the other
// direction, failing a read in progress (the worker runtime reads on
// Serve's goroutine and calls it when its ctx ends). Serve's ctx is not the
// ctx passed to Start; it is cancelled by Close, the in-memory equivalent
// of SIGTERM.
//
// When Serve returns, the Process is Done and Exit reports code 0 for a nil
// error, code 1 with the error's text as Reason for an error, and code 2
// with Reason "panic: ..." if Serve panicked; the panic value and stack
// are then in StderrTail.
//
// Close runs the same ladder as for a process: stop reading the worker's
// output, so that Serve's writes, the one in progress included, fail with
// io.ErrClosedPipe; close the worker's input; wait CloseTimeout; cancel
// Serve's ctx; wait TermTimeout; then break the input pipe so every read
// in Serve fails too, and wait TermTimeout again. A goroutine cannot be
// killed, so if Serve still has not returned, Close reports an error and
// the goroutine is left running.
type InMemory struct {
	// Serve is the worker. It must not be nil.
	Serve func(ctx context.Context, rw io.ReadWriteCloser) error

	// CloseTimeout is how long Close waits for Serve to return after
	// closing its input before it cancels Serve's ctx. Zero means 5s.
	CloseTimeout time.Duration
	// TermTimeout is how long Close waits after cancelling Serve's ctx,
	// and again after breaking the pipes. Zero means 3s.
	TermTimeout time.Duration
}

// Start runs Serve in a new goroutine. ctx bounds only the start.
func (m *InMemory) Start(ctx context.Context) (Process, error) {
	if m.Serve == nil {
		return nil, errors.New("transport: in-memory: Serve is nil")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("transport: start in-memory worker: %w", err)
	}
	workerR, hostW := io.Pipe() // host → worker: the worker's stdin
	hostR, workerW := io.Pipe() // worker → host: the worker's stdout
	serveCtx, cancel := context.WithCancel(context.Background())
	p := &inMemory{
		hostR:        hostR,
		hostW:        hostW,
		workerR:      workerR,
		workerW:      workerW,
		cancel:       cancel,
		tail:         stderrcap.New(0, nil, nil),
		closeTimeout: m.CloseTimeout,
		termTimeout:  m.TermTimeout,
		done:         make(chan struct{}),
	}
	if p.closeTimeout <= 0 {
		p.closeTimeout = ladder.DefaultCloseTimeout
	}
	if p.termTimeout <= 0 {
		p.termTimeout = ladder.DefaultTermTimeout
	}
	go p.serve(serveCtx, m.Serve)
	return p, nil
}

// inMemory is the Process of an InMemory.
type inMemory struct {
	hostR   *io.PipeReader
	hostW   *io.PipeWriter
	workerR *io.PipeReader
	workerW *io.PipeWriter
	cancel  context.CancelFunc
	tail    *stderrcap.Capture

	closeTimeout, termTimeout time.Duration

	done   chan struct{}
	mu     sync.Mutex
	status ExitStatus

	closeOnce sync.Once
	closeErr  error
}

// workerRW is the worker's end: it reads what the host writes and writes
// what the host reads. Close ends only the worker's output.
type workerRW struct {
	*io.PipeReader
	w *io.PipeWriter
}

func (rw workerRW) Write(b []byte) (int, error) { return rw.w.Write(b) }
func (rw workerRW) Close() error                { return rw.w.Close() }

// CloseRead ends the worker's input: its reads, the one in progress
// included, fail with io.ErrClosedPipe, and so do the host's writes.
func (rw workerRW) CloseRead() error { return rw.PipeReader.Close() }

func (p *inMemory) serve(ctx context.Context, serve func(context.Context, io.ReadWriteCloser) error) {
	// If Serve neither returns nor panics, it called runtime.Goexit.
	status := ExitStatus{Code: 2, Reason: "worker goroutine exited without returning"}
	defer func() {
		if v := recover(); v != nil {
			status = ExitStatus{Code: 2, Reason: fmt.Sprintf("panic: %v", v)}
			fmt.Fprintf(p.tail, "panic: %v\n\n%s", v, debug.Stack())
		}
		p.workerW.Close() // the host reads EOF
		p.workerR.Close() // the host's writes fail
		p.cancel()
		p.mu.Lock()
		p.status = status
		p.mu.Unlock()
		close(p.done)
	}()
	if err := serve(ctx, workerRW{PipeReader: p.workerR, w: p.workerW}); err != nil {
		status = ExitStatus{Code: 1, Reason: err.Error()}
	} else {
		status = ExitStatus{Code: 0}
	}
}

func (p *inMemory) Read(b []byte) (int, error)  { return p.hostR.Read(b) }
func (p *inMemory) Write(b []byte) (int, error) { return p.hostW.Write(b) }

// CloseWrite closes the worker's input: its reads return io.EOF once it
// has read everything written before.
func (p *inMemory) CloseWrite() error { return p.hostW.Close() }

func (p *inMemory) Done() <-chan struct{} { return p.done }

func (p *inMemory) Exit() ExitStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

func (p *inMemory) StderrTail() string { return p.tail.Tail() }

func (p *inMemory) waitDone(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// Close runs the shutdown ladder (see InMemory).
func (p *inMemory) Close() error {
	p.closeOnce.Do(func() {
		l := ladder.Ladder{
			Done: p.done,
			StopReading: func() error {
				p.hostR.Close()
				return nil
			},
			CloseInput: func() error {
				p.CloseWrite()
				return nil
			},
			CloseTimeout: p.closeTimeout,
			Terminate: func() error {
				p.cancel()
				return nil
			},
			TermTimeout: p.termTimeout,
			Kill: func() error {
				// Unblock Serve wherever it waits on the pipes: its
				// reads fail with io.ErrClosedPipe.
				p.hostR.CloseWithError(errKilled)
				p.workerR.CloseWithError(errKilled)
				return nil
			},
			KillTimeout: p.termTimeout,
		}
		if exit, _ := l.Run(); exit == ladder.Running {
			p.closeErr = errors.New("transport: in-memory worker did not return after its context was cancelled and its pipes were broken; its goroutine is still running")
		}
	})
	return p.closeErr
}
