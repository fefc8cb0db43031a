package logsink_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

// TestFiles_MaxBytes: WithMaxBytes caps events.jsonl and metrics.jsonl
// together. The line that would cross the cap is not written; the refusal
// is sticky and wraps ErrMaxBytes; the files keep whole lines; what the
// files held when opened counts. There was no cap: a worker filled the
// file system.
func TestFiles_MaxBytes(t *testing.T) {
	const capBytes = 1000
	dir := t.TempDir()
	ctx := t.Context()
	s := openFiles(t, dir, logsink.WithMaxBytes(capBytes))
	var err error
	n := 0
	for ; err == nil && n < 1000; n++ {
		if n%2 == 0 {
			err = s.Event(ctx, tproxy.Event{Name: "tick", Timestamp: ts0, Data: map[string]any{"i": n}})
		} else {
			err = s.Metric(ctx, tproxy.Metric{Name: "m", Value: float64(n), Timestamp: ts0})
		}
	}
	if !errors.Is(err, logsink.ErrMaxBytes) || n < 5 || n > 20 {
		t.Fatalf("after %d records: %v, want ErrMaxBytes within a few lines", n, err)
	}
	for name, err := range map[string]error{
		"Event":  s.Event(ctx, tproxy.Event{Name: "x", Timestamp: ts0}),
		"Metric": s.Metric(ctx, tproxy.Metric{Name: "x", Timestamp: ts0}),
		"Flush":  s.Flush(),
		"Close":  s.Close(),
	} {
		if !errors.Is(err, logsink.ErrMaxBytes) {
			t.Errorf("%s after the cap: %v, want ErrMaxBytes", name, err)
		}
	}
	var size int64
	lines := 0
	for _, f := range []string{logsink.EventsFile, logsink.MetricsFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		size += int64(len(b))
		if len(b) > 0 && !strings.HasSuffix(string(b), "\n") {
			t.Errorf("%s ends in a partial line", f)
		}
		lines += strings.Count(string(b), "\n")
	}
	if size > capBytes || lines != n-1 {
		t.Errorf("the files hold %d bytes in %d lines; cap %d, %d records accepted", size, lines, capBytes, n-1)
	}

	// Reopened, what the files hold counts against the cap.
	s = openFiles(t, dir, logsink.WithMaxBytes(size+10))
	if err := s.Event(ctx, tproxy.Event{Name: "tick", Timestamp: ts0}); !errors.Is(err, logsink.ErrMaxBytes) {
		t.Errorf("a line past the cap on reopening: %v", err)
	}
	s.Close()

	// No option, no cap.
	s = openFiles(t, t.TempDir())
	for i := range 200 {
		if err := s.Event(ctx, tproxy.Event{Name: "tick", Timestamp: ts0, Data: map[string]any{"i": i}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
