package ladder_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tproxy/tproxy/internal/ladder"
)

// worker records the rungs it is put through and exits at the rung named
// by exitAt ("" for never).
type worker struct {
	done   chan struct{}
	exitAt string
	rungs  []string
}

func (w *worker) hook(name string, err error) func() error {
	return func() error {
		w.rungs = append(w.rungs, name)
		if name == w.exitAt {
			close(w.done)
		}
		return err
	}
}

func (w *worker) ladder(errs map[string]error) ladder.Ladder {
	return ladder.Ladder{
		Done:         w.done,
		StopReading:  w.hook("stop-reading", errs["stop-reading"]),
		CloseInput:   w.hook("close-input", errs["close-input"]),
		CloseTimeout: 10 * time.Millisecond,
		Terminate:    w.hook("terminate", errs["terminate"]),
		TermTimeout:  10 * time.Millisecond,
		Kill:         w.hook("kill", errs["kill"]),
		KillTimeout:  10 * time.Millisecond,
	}
}

// TestRun: the rungs come in order, stop once the worker has exited
// (except the first two, which always run), and Run says when it exited.
func TestRun(t *testing.T) {
	all := []string{"stop-reading", "close-input", "terminate", "kill"}
	tests := []struct {
		exitAt string
		want   ladder.Exit
		rungs  []string
	}{
		{"stop-reading", ladder.Closed, all[:2]},
		{"close-input", ladder.Closed, all[:2]},
		{"terminate", ladder.Terminated, all[:3]},
		{"kill", ladder.Killed, all},
		{"", ladder.Running, all},
	}
	for _, tt := range tests {
		t.Run(tt.want.String()+"/"+tt.exitAt, func(t *testing.T) {
			w := &worker{done: make(chan struct{}), exitAt: tt.exitAt}
			l := w.ladder(nil)
			exit, err := l.Run()
			if exit != tt.want || err != nil {
				t.Errorf("Run = %v, %v; want %v, nil", exit, err, tt.want)
			}
			if !slices.Equal(w.rungs, tt.rungs) {
				t.Errorf("rungs %v, want %v", w.rungs, tt.rungs)
			}
		})
	}
}

// TestRunExitedBefore: a worker that exited on its own still has its
// pipes closed, and gets no signal.
func TestRunExitedBefore(t *testing.T) {
	w := &worker{done: make(chan struct{})}
	close(w.done)
	l := w.ladder(nil)
	l.CloseTimeout = time.Hour
	if exit, err := l.Run(); exit != ladder.Closed || err != nil {
		t.Errorf("Run = %v, %v; want %v, nil", exit, err, ladder.Closed)
	}
	if want := []string{"stop-reading", "close-input"}; !slices.Equal(w.rungs, want) {
		t.Errorf("rungs %v, want %v", w.rungs, want)
	}
}

// TestRunErrors: a failing rung does not stop the climb, and every error
// is reported, in rung order.
func TestRunErrors(t *testing.T) {
	errs := map[string]error{"close-input": errors.New("e1"), "kill": errors.New("e2")}
	w := &worker{done: make(chan struct{}), exitAt: "kill"}
	l := w.ladder(errs)
	exit, err := l.Run()
	if exit != ladder.Killed {
		t.Errorf("exit %v, want %v", exit, ladder.Killed)
	}
	if !errors.Is(err, errs["close-input"]) || !errors.Is(err, errs["kill"]) || err.Error() != "e1\ne2" {
		t.Errorf("err = %q, want e1 then e2", err)
	}
}

// TestRunNilRungs: a missing rung is skipped with its wait; a Kill with
// no KillTimeout is waited for however long it takes.
func TestRunNilRungs(t *testing.T) {
	w := &worker{done: make(chan struct{})}
	l := ladder.Ladder{
		Done:         w.done,
		CloseTimeout: time.Millisecond,
		TermTimeout:  time.Hour, // skipped with Terminate
		Kill: func() error {
			w.rungs = append(w.rungs, "kill")
			go func() {
				time.Sleep(20 * time.Millisecond)
				close(w.done)
			}()
			return nil
		},
	}
	type result struct {
		exit ladder.Exit
		err  error
	}
	ran := make(chan result, 1)
	go func() {
		exit, err := l.Run()
		ran <- result{exit, err}
	}()
	select {
	case r := <-ran:
		if r.exit != ladder.Killed || r.err != nil {
			t.Errorf("Run = %v, %v; want %v, nil", r.exit, r.err, ladder.Killed)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run still running 30 s in: it waited TermTimeout without a Terminate")
	}
	if !slices.Equal(w.rungs, []string{"kill"}) {
		t.Errorf("rungs %v, want [kill]", w.rungs)
	}

	w = &worker{done: make(chan struct{})}
	l = ladder.Ladder{Done: w.done}
	if exit, err := l.Run(); exit != ladder.Running || err != nil {
		t.Errorf("a ladder with no rungs: Run = %v, %v; want %v, nil", exit, err, ladder.Running)
	}
}
