package transport

import "errors"

// Killer is implemented by a Process that can be ended at once, skipping
// the shutdown ladder: a host kills a worker that stopped answering rather
// than wait for a graceful exit that will not come. Kill returns once the
// worker has ended (or could not be ended); Close is still needed to
// release the Process.
type Killer interface {
	// Kill ends the worker now.
	Kill() error
}

// Kill sends SIGKILL to the worker's process group (on Windows, kills the
// worker process) and waits for the exit.
func (p *subprocess) Kill() error {
	if err := p.kill(); err != nil {
		return err
	}
	<-p.done
	return nil
}

// Kill cancels the worker's context and breaks its pipes, then waits up to
// TermTimeout for Serve to return.
func (p *inMemory) Kill() error {
	p.cancel()
	p.hostR.CloseWithError(errKilled)
	p.workerR.CloseWithError(errKilled)
	if !p.waitDone(p.termTimeout) {
		return errors.New("transport: in-memory worker did not return after being killed; its goroutine is still running")
	}
	return nil
}
