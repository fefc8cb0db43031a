package e2b

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tproxy/tproxy/transport"
)

// ErrPoolClosed is returned by Pool.Start once the pool is closed.
var ErrPoolClosed = errors.New("e2b: pool closed")

// maxRefillBackoff caps the wait between failed attempts to warm a
// sandbox.
const maxRefillBackoff = 30 * time.Second

// Pool is a [transport.Transport] that keeps Size sandboxes warm — created,
// with the worker uploaded — so that a session pays only for starting the
// worker process. Each Start takes one warm sandbox, starts a fresh worker
// in it and, in the background, warms a replacement. A sandbox serves one
// session only: the session's Process.Close ends the worker and kills the
// sandbox, as with [E2B], so nothing a session left behind (files, stray
// processes) reaches the next one, and two sessions never share one.
//
// The pool refreshes the timeout of its idle sandboxes every
// RefreshInterval, so they wait as long as needed; a failed warm-up is
// retried with backoff, and logged to E2B.Logger. Close kills the idle
// sandboxes; sandboxes handed out are killed by their Process's Close.
//
// A Pool may be used from several goroutines, by host.RunManifest and
// host.RunMany unchanged.
type Pool struct {
	t     *E2B
	c     *client
	w     workerSource
	files []inputFile
	size  int

	ctx    context.Context // ends at Close; bounds warm-ups and refreshes
	cancel context.CancelFunc
	bg     sync.WaitGroup

	ready chan *warm // warm sandboxes, in the order they became warm

	mu       sync.Mutex
	idle     map[string]*warm // warm and not handed out
	idleSecs float64          // idle time of sandboxes no longer idle
	closed   bool
	lastErr  error // the last failed warm-up, for a Start that times out

	closeOnce sync.Once
	closeErr  error
}

var _ transport.Transport = (*Pool)(nil)

// NewPool starts size sandboxes configured by t (size < 1 means 1) and
// returns once all are warm. ctx bounds the warm-up; a sandbox creation
// under way when ctx ends gets t.CleanupGrace more, so that a control
// plane about to answer does not leave a sandbox nobody knows the id of
// (one that does is found by [Sweep], and expires by its timeout). If the
// warm-up fails, every sandbox created is killed, within the same grace
// after ctx ends. t must not be changed while the pool is in use.
func NewPool(ctx context.Context, t *E2B, size int) (_ *Pool, err error) {
	c, err := t.client()
	if err != nil {
		return nil, err
	}
	defer func() { err = c.secrets.maskErr(err) }()
	w, err := c.worker()
	if err != nil {
		return nil, err
	}
	if _, err := c.workerEnv(); err != nil {
		return nil, err
	}
	files, err := c.inputFiles()
	if err != nil {
		return nil, err
	}
	size = max(size, 1)
	p := &Pool{t: t, c: c, w: w, files: files, size: size, ready: make(chan *warm, size), idle: map[string]*warm{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())

	errs := make([]error, size)
	var wg sync.WaitGroup
	for i := range size {
		wg.Go(func() {
			w, err := p.warm(ctx)
			if err == nil {
				p.put(w)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, errors.Join(fmt.Errorf("e2b: warming the pool: %w", err),
			p.close(func() (context.Context, context.CancelFunc) { return c.cleanupContext(ctx) }))
	}
	p.bg.Go(p.refreshIdle)
	return p, nil
}

// Size is the number of sandboxes the pool keeps warm.
func (p *Pool) Size() int { return p.size }

// Idle is the number of warm sandboxes waiting for a session.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// IdleSeconds is what keeping sandboxes warm has cost so far: the
// sandbox-seconds the pool's sandboxes spent waiting for a session, from
// their creation until a session took them or the pool killed them (or
// until now, for those still waiting). A session's own sandbox-seconds
// are in its Info.
func (p *Pool) IdleSeconds() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	total, now := p.idleSecs, time.Now()
	for _, w := range p.idle {
		total += now.Sub(w.sb.created).Seconds()
	}
	return total
}

// warm is a sandbox with the worker (and the input files) in it.
type warm struct {
	sb   *sandbox
	e    *envd
	info Info
}

// retire stops counting w's idle time; p.mu is held.
func (p *Pool) retire(w *warm) {
	delete(p.idle, w.sb.ID)
	p.idleSecs += time.Since(w.sb.created).Seconds()
}

// createTimeout bounds a sandbox creation. Its context's end does not cut
// it short at once (see graceContext): a creation cut short after the
// control plane acted would leave a sandbox nobody knows the id of, so
// Close waits for it instead, and kills the sandbox.
const createTimeout = 2 * time.Minute

// warm creates a sandbox and puts the worker in it; on failure the
// sandbox is killed. ctx is NewPool's, or the pool's own for a refill.
func (p *Pool) warm(ctx context.Context) (*warm, error) {
	cctx, cancel := p.c.graceContext(ctx, createTimeout)
	sb, err := p.c.create(cctx)
	cancel()
	if err != nil {
		return nil, err
	}
	w := &warm{sb: sb, e: p.c.envd(sb), info: Info{Template: p.c.template(), Pooled: true}}
	err = p.c.checkEnvd(sb)
	if err == nil {
		err = w.e.prepare(ctx, p.w, p.files, &w.info)
	}
	if err != nil {
		kctx, cancel := p.c.cleanupContext(ctx)
		p.c.kill(kctx, sb.ID)
		cancel()
		return nil, err
	}
	return w, nil
}

// killNow kills sb for the pool's own work, which no caller's context
// bounds.
func (p *Pool) killNow(sb *sandbox) error {
	ctx, cancel := context.WithTimeout(context.Background(), sandboxKillTimeout)
	defer cancel()
	return p.c.kill(ctx, sb.ID)
}

// discard kills sb, which a Start whose context is ctx took but could not
// use, and returns err with the kill's failure, if any. The kill runs in
// the background, bounded by sandboxKillTimeout and waited for by Close;
// Start waits for it only until ctx ends plus CleanupGrace, so a
// control plane that does not answer cannot hold the caller.
func (p *Pool) discard(ctx context.Context, sb *sandbox, err error) error {
	p.mu.Lock()
	closed := p.closed
	if !closed {
		p.bg.Add(1) // before Close's Wait: closed is set under mu first
	}
	p.mu.Unlock()
	if closed {
		// Close no longer waits for background work: kill here.
		kctx, cancel := p.c.cleanupContext(ctx)
		defer cancel()
		if kerr := p.c.kill(kctx, sb.ID); kerr != nil {
			return errors.Join(err, fmt.Errorf("e2b: and killing sandbox %s after the failed start failed too (it expires by its timeout; Sweep finds it): %w", sb.ID, kerr))
		}
		return err
	}
	var (
		mu     sync.Mutex
		gaveUp bool
		result = make(chan error, 1)
	)
	go func() {
		defer p.bg.Done()
		kerr := p.killNow(sb)
		mu.Lock()
		defer mu.Unlock()
		if !gaveUp {
			result <- kerr
		} else if kerr != nil && p.t.Logger != nil {
			p.t.Logger.Warn("e2b: killing a sandbox after a failed start failed; it expires by its timeout", "sandbox", sb.ID, "err", p.c.secrets.maskErr(kerr))
		}
	}()
	wctx, cancel := p.c.cleanupContext(ctx)
	defer cancel()
	var kerr error
	select {
	case kerr = <-result:
	case <-wctx.Done():
		mu.Lock()
		select {
		case kerr = <-result: // it ended meanwhile
		default:
			gaveUp = true // the goroutine logs its outcome
		}
		mu.Unlock()
		if gaveUp {
			return errors.Join(err, fmt.Errorf("e2b: sandbox %s is still being killed after the failed start; Pool.Close waits for the kill", sb.ID))
		}
	}
	if kerr != nil {
		return errors.Join(err, fmt.Errorf("e2b: and killing sandbox %s after the failed start failed too (it expires by its timeout; Sweep finds it): %w", sb.ID, kerr))
	}
	return err
}

// put makes w available, or kills it if the pool has closed.
func (p *Pool) put(w *warm) {
	p.mu.Lock()
	if p.closed {
		p.idleSecs += time.Since(w.sb.created).Seconds()
		p.mu.Unlock()
		p.killNow(w.sb)
		return
	}
	p.idle[w.sb.ID] = w
	p.mu.Unlock()
	p.ready <- w // never blocks: at most size sandboxes are idle
}

// refill warms one replacement, retrying with backoff until it succeeds
// or the pool closes.
func (p *Pool) refill() {
	backoff := p.c.retry.base
	for {
		w, err := p.warm(p.ctx)
		if err == nil {
			p.put(w)
			return
		}
		if p.ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		p.lastErr = err
		p.mu.Unlock()
		if p.t.Logger != nil {
			p.t.Logger.Warn("e2b: warming a pool sandbox failed; retrying", "err", err, "backoff", backoff)
		}
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxRefillBackoff)
	}
}

// refreshIdle keeps the idle sandboxes from expiring.
func (p *Pool) refreshIdle() {
	every := p.t.RefreshInterval
	if every <= 0 {
		every = time.Duration(p.t.timeoutSeconds()) * time.Second / 3
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-tick.C:
		}
		p.mu.Lock()
		ids := make([]string, 0, len(p.idle))
		for id := range p.idle {
			ids = append(ids, id)
		}
		p.mu.Unlock()
		for _, id := range ids {
			ctx, cancel := context.WithTimeout(p.ctx, every)
			err := p.c.setTimeout(ctx, id, p.t.timeoutSeconds())
			cancel()
			if err != nil && p.ctx.Err() == nil && p.t.Logger != nil {
				p.t.Logger.Warn("e2b: refreshing an idle pool sandbox's timeout failed", "sandbox", id, "err", err)
			}
		}
	}
}

// Start takes a warm sandbox, waiting for one if all are in use, starts a
// fresh worker in it and returns it; a replacement is warmed in
// the background. ctx bounds the wait and the start. If the worker cannot
// be started, the sandbox is killed; Start waits for the kill until ctx
// ends plus E2B.CleanupGrace, and leaves it running in the background
// after that (Close waits for it).
func (p *Pool) Start(ctx context.Context) (transport.Process, error) {
	env, err := p.c.workerEnv()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	var w *warm
	for w == nil {
		select {
		case w = <-p.ready:
		case <-p.ctx.Done():
			return nil, ErrPoolClosed
		case <-ctx.Done():
			p.mu.Lock()
			last := p.lastErr
			p.mu.Unlock()
			if last != nil {
				return nil, fmt.Errorf("e2b: waiting for a warm sandbox: %w (the last warm-up failed: %w)", ctx.Err(), last)
			}
			return nil, fmt.Errorf("e2b: waiting for a warm sandbox: %w", ctx.Err())
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		if _, ok := p.idle[w.sb.ID]; !ok {
			w = nil // not ours any more; cannot happen while open
		} else {
			p.retire(w)
			p.bg.Go(p.refill)
		}
		p.mu.Unlock()
	}
	info := w.info
	info.Wait = time.Since(t0)
	proc, err := p.c.launch(ctx, w.e, p.w.remote, env, info)
	if err != nil {
		return nil, p.c.secrets.maskErr(p.discard(ctx, w.sb, err))
	}
	return proc, nil
}

// Close stops warming, kills the idle sandboxes and waits for warm-ups in
// flight, whose sandboxes it kills too. Sandboxes handed out to sessions
// are left to their Process's Close. Close is idempotent; every call
// returns the same error.
func (p *Pool) Close() error {
	return p.close(func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), sandboxKillTimeout)
	})
}

// close is Close, with the kills of the idle sandboxes bounded by the
// contexts kctx returns; they run at once, so a control plane that does
// not answer holds close for one bound, not one per sandbox.
func (p *Pool) close(kctx func() (context.Context, context.CancelFunc)) error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		idle := p.idle
		p.idle = map[string]*warm{}
		now := time.Now()
		for _, w := range idle {
			p.idleSecs += now.Sub(w.sb.created).Seconds()
		}
		p.mu.Unlock()
		p.cancel()
		p.bg.Wait()
		var (
			mu   sync.Mutex
			errs []error
			wg   sync.WaitGroup
		)
		for _, w := range idle {
			wg.Go(func() {
				ctx, cancel := kctx()
				defer cancel()
				if err := p.c.kill(ctx, w.sb.ID); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		p.closeErr = p.c.secrets.maskErr(errors.Join(errs...))
	})
	return p.closeErr
}
