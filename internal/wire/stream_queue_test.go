package wire_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
)

// slowWriter records each Write and takes its time, so that writers pile
// up behind one another.
type slowWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	fail   error
}

func (w *slowWriter) Read([]byte) (int, error) { select {} }
func (w *slowWriter) Close() error             { return nil }
func (w *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(50 * time.Microsecond)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail != nil {
		return 0, w.fail
	}
	w.writes++
	return w.buf.Write(p)
}

// TestStreamQueuedWritesKeepOrder has goroutines send notifications and
// then a frame each, concurrently: every line arrives whole, each
// goroutine's lines in its order, its frame after its notifications, and
// notifications queued during a write share the next one.
func TestStreamQueuedWritesKeepOrder(t *testing.T) {
	w := &slowWriter{}
	s := wire.NewStream(w, 0)
	const goroutines, perG = 4, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				e := tproxy.Heartbeat{StepID: fmt.Sprintf("g%d-%d", g, i)}
				if err := s.WriteNotification(tproxy.MethodHeartbeat, e); err != nil {
					t.Error(err)
					return
				}
			}
			if err := s.WriteFrame(fmt.Appendf(nil, `{"done":"g%d"}`, g)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	w.mu.Lock()
	out, writes := w.buf.String(), w.writes
	w.mu.Unlock()
	next := make([]int, goroutines)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, l := range lines {
		var g, i int
		if _, err := fmt.Sscanf(l, `{"done":"g%d"}`, &g); err == nil {
			if next[g] != perG {
				t.Fatalf("g%d's frame came after %d of its %d notifications", g, next[g], perG)
			}
			continue
		}
		j := strings.Index(l, `"step_id":"g`)
		if j < 0 || !strings.HasPrefix(l, `{"jsonrpc":"2.0","method":"heartbeat","params":{"timestamp":`) {
			t.Fatalf("broken line %q", l)
		}
		if _, err := fmt.Sscanf(l[j:], `"step_id":"g%d-%d"}}`, &g, &i); err != nil || i != next[g] {
			t.Fatalf("line %q out of order (want g%d-%d): %v", l, g, next[g], err)
		}
		next[g]++
	}
	if len(lines) != goroutines*(perG+1) {
		t.Fatalf("%d lines, want %d", len(lines), goroutines*(perG+1))
	}
	if writes >= len(lines) {
		t.Errorf("%d writes for %d lines: nothing was coalesced", writes, len(lines))
	}
}

// TestStreamWriteErrorIsSticky: a failed write is reported to the waiting
// writer, or to the next call after a queued notification.
func TestStreamWriteErrorIsSticky(t *testing.T) {
	boom := errors.New("broken pipe")
	w := &slowWriter{fail: boom}
	s := wire.NewStream(w, 0)
	if err := s.WriteFrame([]byte(`{}`)); !errors.Is(err, boom) {
		t.Fatalf("WriteFrame = %v, want %v", err, boom)
	}
	if err := s.WriteNotification(tproxy.MethodHeartbeat, tproxy.Heartbeat{}); !errors.Is(err, boom) {
		t.Fatalf("WriteNotification after a failure = %v, want %v", err, boom)
	}
}

// TestStreamHoldNotification: held notifications go out in one Write with
// the next frame, or at Flush; one over the cap is refused and holds
// nothing.
func TestStreamHoldNotification(t *testing.T) {
	w := &slowWriter{}
	s := wire.NewStream(w, 64)
	for i := range 3 {
		if err := s.HoldNotification("m", map[string]int{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.HoldNotification("m", strings.Repeat("x", 100)); !errors.Is(err, tproxy.ErrFrameTooLarge) {
		t.Errorf("oversize held notification: %v, want ErrFrameTooLarge", err)
	}
	if w.writes != 0 {
		t.Fatalf("held notifications were written at once: %q", w.buf.String())
	}
	if err := s.WriteFrame([]byte(`{"r":1}`)); err != nil {
		t.Fatal(err)
	}
	want := `{"jsonrpc":"2.0","method":"m","params":{"i":0}}` + "\n" +
		`{"jsonrpc":"2.0","method":"m","params":{"i":1}}` + "\n" +
		`{"jsonrpc":"2.0","method":"m","params":{"i":2}}` + "\n" + `{"r":1}` + "\n"
	if w.buf.String() != want || w.writes != 1 {
		t.Errorf("wrote %q in %d writes, want %q in one", w.buf.String(), w.writes, want)
	}
	if err := s.HoldNotification("m", 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(w.buf.String(), `{"jsonrpc":"2.0","method":"m","params":7}`+"\n") || w.writes != 2 {
		t.Errorf("Flush did not write the held notification: %q, %d writes", w.buf.String(), w.writes)
	}
}

// TestStreamQueueNotification: queued notifications return before they
// are written, share writes, and stay ahead of every frame written after
// them; Flush waits for them; a write error reaches the next call.
func TestStreamQueueNotification(t *testing.T) {
	w := &slowWriter{}
	s := wire.NewStream(w, 0)
	const n = 2000
	for i := range n {
		if err := s.QueueNotification(tproxy.MethodHeartbeat, tproxy.Heartbeat{StepID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WriteFrame([]byte(`{"last":true}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	out, writes := w.buf.String(), w.writes
	w.mu.Unlock()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != n+1 || lines[n] != `{"last":true}` {
		t.Fatalf("%d lines, last %q; want %d notifications then the frame", len(lines), lines[len(lines)-1], n)
	}
	for i, l := range lines[:n] {
		if !strings.HasSuffix(l, fmt.Sprintf(`"step_id":"%d"}}`, i)) {
			t.Fatalf("line %d is %q: out of order", i, l)
		}
	}
	if writes >= n/2 {
		t.Errorf("%d writes for %d queued notifications: they were not coalesced", writes, n)
	}

	boom := errors.New("broken pipe")
	bad := wire.NewStream(&slowWriter{fail: boom}, 0)
	if err := bad.QueueNotification(tproxy.MethodHeartbeat, tproxy.Heartbeat{}); err != nil {
		t.Fatalf("queueing: %v", err)
	}
	if err := bad.Flush(); !errors.Is(err, boom) {
		t.Errorf("Flush after a failed write = %v, want %v", err, boom)
	}
	if err := bad.QueueNotification(tproxy.MethodHeartbeat, tproxy.Heartbeat{}); !errors.Is(err, boom) {
		t.Errorf("QueueNotification after a failed write = %v, want %v", err, boom)
	}
	big := wire.NewStream(&slowWriter{}, 32)
	if err := big.QueueNotification(tproxy.MethodHeartbeat, tproxy.Heartbeat{StepID: strings.Repeat("x", 40)}); !errors.Is(err, tproxy.ErrFrameTooLarge) {
		t.Errorf("oversize notification: %v, want ErrFrameTooLarge", err)
	}
}
