package host

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tproxy/tproxy/transport"
)

// DefaultHeartbeatTimeout is how long a call may go without hearing
// anything from the worker (a heartbeat, any notification, any response)
// before the worker is declared hung. The worker runtime sends a heartbeat
// every worker.DefaultHeartbeatInterval (2 s) while it works on a request.
const DefaultHeartbeatTimeout = 30 * time.Second

// SilenceError reports a worker that went silent: no heartbeat, no
// notification, no response for longer than the heartbeat timeout while a
// call was pending. The host killed it.
type SilenceError struct {
	// Timeout is the heartbeat timeout in force.
	Timeout time.Duration
	// Silence is how long the worker had been silent.
	Silence time.Duration
}

// Error names the silence and the timeout.
func (e *SilenceError) Error() string {
	return fmt.Sprintf("tproxy/host: the worker sent nothing for %v while a call was pending (heartbeat timeout %v); it was killed",
		e.Silence.Round(time.Millisecond), e.Timeout)
}

// watchdog is the client's heartbeat-silence check. It holds no goroutine:
// a timer (time.AfterFunc) runs check at the earliest moment the silence
// could reach the timeout, and check sets it again for the next such
// moment while a call is pending. A client with no call pending has no
// timer running, so an idle session costs no goroutine and no wake-ups
// for it.
type watchdog struct {
	mu      sync.Mutex
	timeout time.Duration // 0 until the handshake is done, and when disabled
	pending int           // calls waiting for their response
	armed   bool          // timer is set, or check is running
	stopped bool          // Close has begun: set no timer
	timer   *time.Timer   // runs check; nil until first set
}

// clockBase anchors lastHeard to the monotonic clock.
var clockBase = time.Now()

// heard records that something arrived from the worker.
func (c *Client) heard() { c.lastHeard.Store(int64(time.Since(clockBase))) }

// sinceHeard is how long the worker has been silent.
func (c *Client) sinceHeard() time.Duration {
	return time.Since(clockBase) - time.Duration(c.lastHeard.Load())
}

// watch starts the heartbeat-silence check, with timeout, for the calls
// made from now on.
func (c *Client) watch(timeout time.Duration) {
	c.wd.mu.Lock()
	c.wd.timeout = timeout
	c.wd.mu.Unlock()
}

// callStarted counts a pending call; the returned func ends it. A call
// starting after an idle period restarts the silence clock: an idle worker
// owes no heartbeat.
func (c *Client) callStarted() (end func()) {
	wd := &c.wd
	wd.mu.Lock()
	wd.pending++
	if wd.pending == 1 {
		c.heard()
		if wd.timeout > 0 && !wd.armed && !wd.stopped {
			wd.armed = true
			if wd.timer == nil {
				wd.timer = time.AfterFunc(wd.timeout, c.check)
			} else {
				wd.timer.Reset(wd.timeout)
			}
		}
	}
	wd.mu.Unlock()
	return func() {
		wd.mu.Lock()
		wd.pending--
		wd.mu.Unlock()
	}
}

// check runs on the watchdog's timer. With no call pending it lets the
// timer lapse (the next call sets it again); with a call pending and the
// worker silent for less than the timeout, it sets the timer for when the
// silence would reach it; else it kills the worker, which fails every
// pending call with a *SilenceError.
func (c *Client) check() {
	wd := &c.wd
	wd.mu.Lock()
	if wd.stopped || wd.pending == 0 || c.disconnected() {
		wd.armed = false
		wd.mu.Unlock()
		return
	}
	timeout := wd.timeout
	silence := c.sinceHeard()
	if silence < timeout {
		wd.timer.Reset(timeout - silence)
		wd.mu.Unlock()
		return
	}
	wd.armed = false
	c.bg.Add(1) // before Close's Wait: Close sets stopped under mu first
	wd.mu.Unlock()
	defer c.bg.Done()

	c.mu.Lock()
	if c.silenceErr == nil && !c.closing {
		c.silenceErr = &SilenceError{Timeout: timeout, Silence: silence}
	}
	c.mu.Unlock()
	c.cfg.logger.Error("tproxy/host: the worker went silent; killing it", "silence", silence, "timeout", timeout)
	if k, ok := c.proc.(transport.Killer); ok {
		if err := k.Kill(); err != nil {
			c.cfg.logger.Error("tproxy/host: killing the silent worker failed", "err", err)
		}
	}
	c.conn.Close()
}

// stopWatch stops the watchdog for good; a check already killing the
// worker is waited for by Close, through bg.
func (c *Client) stopWatch() {
	c.wd.mu.Lock()
	c.wd.stopped = true
	if c.wd.timer != nil {
		c.wd.timer.Stop()
	}
	c.wd.mu.Unlock()
}

// disconnected reports whether the connection to the worker is closed.
func (c *Client) disconnected() bool {
	select {
	case <-c.conn.DisconnectNotify():
		return true
	default:
		return false
	}
}

// withCallTimeout bounds ctx by the per-call timeout, if one is set.
func (c *Client) withCallTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.cfg.callTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.cfg.callTimeout)
}
