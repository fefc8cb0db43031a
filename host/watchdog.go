package host

import (
	"context"
	"fmt"
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

// heard records that something arrived from the worker.
func (c *Client) heard() { c.lastHeard.Store(time.Now().UnixNano()) }

// callStarted counts a pending call; the returned func ends it. A call
// starting after an idle period restarts the silence clock: an idle worker
// owes no heartbeat.
func (c *Client) callStarted() (end func()) {
	if c.pending.Add(1) == 1 {
		c.heard()
	}
	return func() { c.pending.Add(-1) }
}

// watch kills the worker when it stays silent past the heartbeat timeout
// with a call pending, which fails every pending call with a
// *SilenceError. It returns when the connection closes.
func (c *Client) watch(timeout time.Duration) {
	defer c.bg.Done()
	tick := max(timeout/4, 5*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-c.conn.DisconnectNotify():
			return
		case now := <-t.C:
			if c.pending.Load() == 0 {
				continue
			}
			silence := now.Sub(time.Unix(0, c.lastHeard.Load()))
			if silence <= timeout {
				continue
			}
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
			return
		}
	}
}

// withCallTimeout bounds ctx by the per-call timeout, if one is set.
func (c *Client) withCallTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.cfg.callTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.cfg.callTimeout)
}
