package logsink_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
)

// TestEventRawMatchesEvent is the fast path's contract: the same
// notifications written through EventRaw and through Event (after
// json.Unmarshal, the slow path) give byte-identical files.
func TestEventRawMatchesEvent(t *testing.T) {
	now := time.Date(2026, 11, 27, 4, 0, 0, 123, time.UTC)
	open := func(dir string) *logsink.Files {
		f, err := logsink.OpenDir(dir, "sess-é")
		if err != nil {
			t.Fatal(err)
		}
		logsink.SetNow(f, func() time.Time { return now })
		return f
	}
	slowDir, fastDir := t.TempDir(), t.TempDir()
	slow, fast := open(slowDir), open(fastDir)
	ctx := context.Background()
	var raw wire.RawEvent
	fastPaths := 0
	for _, params := range wiretest.OddEvents {
		var e tproxy.Event
		if err := json.Unmarshal([]byte(params), &e); err != nil {
			t.Fatalf("%s: %v", params, err)
		}
		if err := slow.Event(ctx, e); err != nil {
			t.Fatal(err)
		}
		if wire.ParseEvent([]byte(params), &raw) {
			fastPaths++
			fastRaw, _ := wire.RawOf(fast)
			err := fastRaw(ctx, &raw)
			if err != nil {
				t.Fatal(err)
			}
		} else if err := fast.Event(ctx, e); err != nil {
			t.Fatal(err)
		}
		// A metric between events keeps the shared seq in step.
		m := tproxy.Metric{Name: "m", Value: 1, Timestamp: now}
		if err := slow.Metric(ctx, m); err != nil {
			t.Fatal(err)
		}
		if err := fast.Metric(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := slow.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fast.Close(); err != nil {
		t.Fatal(err)
	}
	// Only the duplicate key, the mis-cased member and the event without
	// the timestamp the contract requires take the slow path.
	if want := len(wiretest.OddEvents) - 3; fastPaths != want {
		t.Errorf("%d events took the fast path, want %d", fastPaths, want)
	}
	for _, name := range []string{logsink.EventsFile, logsink.MetricsFile} {
		want, err := os.ReadFile(filepath.Join(slowDir, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(fastDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(wiretest.OddEvents); name == logsink.EventsFile && strings.Count(string(want), "\n") != n {
			t.Fatalf("%s has %d lines, want %d:\n%s", name, strings.Count(string(want), "\n"), n, want)
		}
		if string(got) != string(want) {
			t.Errorf("%s differs:\nfast:\n%s\nslow:\n%s", name, got, want)
		}
	}
}

// FuzzEventRawLine checks the same differentially for any params the fast
// parser accepts.
func FuzzEventRawLine(f *testing.F) {
	for _, s := range wiretest.OddEvents {
		f.Add([]byte(s))
	}
	ts := time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)
	var raw wire.RawEvent
	f.Fuzz(func(t *testing.T, params []byte) {
		if !wire.ParseEvent(params, &raw) {
			return
		}
		var e tproxy.Event
		if err := json.Unmarshal(params, &e); err != nil {
			t.Fatalf("ParseEvent accepted %q, json.Unmarshal refuses it: %v", params, err)
		}
		slow, fast := logsink.Lines(ts, &e, &raw)
		if slow != fast {
			t.Fatalf("%q:\nfast %s\nslow %s", params, fast, slow)
		}
	})
}

// TestFilesBufferShrinks pins issue 13 item 8 for the sink: after one huge
// event, the encoder does not keep a buffer of its size.
func TestFilesBufferShrinks(t *testing.T) {
	f, err := logsink.OpenDir(t.TempDir(), "s")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	big := strings.Repeat("x", 4<<20)
	if err := f.Event(context.Background(), tproxy.Event{Name: "big", Timestamp: time.Now(), Data: map[string]any{"x": big, "y": []any{big}}}); err != nil {
		t.Fatal(err)
	}
	if n := logsink.EncoderBuffers(f); n > 128<<10 {
		t.Errorf("the sink keeps %d bytes of encoder buffers after a huge event, want at most 128 KiB", n)
	}
}
