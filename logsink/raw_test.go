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
	"github.com/tproxy/tproxy/logsink"
)

// oddEvents are event params as they may come over the wire, chosen to
// reach every rule of the line format: reserved-key collisions, numbers
// that JSON writes several ways, strings that need escaping, unicode,
// nested data, zero and non-UTC timestamps.
var oddEvents = []string{
	`{"name":"tick","timestamp":"2026-11-27T03:28:37.392082914Z","step_id":"stream","data":{"i":123456}}`,
	`{"name":"plain","timestamp":"2026-11-27T03:28:37Z"}`,
	`{"name":"empty data","timestamp":"2026-11-27T03:28:37Z","data":{}}`,
	`{"name":"zero time","data":{"a":1}}`,
	`{"name":"offset","timestamp":"2026-11-27T05:28:37.5+02:00","data":{"a":1}}`,
	`{"name":"reserved","timestamp":"2026-11-27T03:28:37Z","step_id":"s","data":{"ts":1,"seq":2,"session":3,"event":4,"metric":5,"value":6,"value_invalid":7,"step_id":8,"unit":9}}`,
	`{"name":"reserved chain","timestamp":"2026-11-27T03:28:37Z","data":{"ts":"a","data.ts":"b","data.data.ts":"c","seq":"d"}}`,
	`{"name":"numbers","timestamp":"2026-11-27T03:28:37Z","data":{"int":42,"neg":-7,"negzero":-0,"zero":0,"frac":1.50,"exp":1E+2,"tiny":1e-7,"huge":1e21,"max":1.7976931348623157e308,"big":12345678901234567890,"d15":999999999999999,"d16":9999999999999999,"one":1.0}}`,
	`{"name":"nan-ish","timestamp":"2026-11-27T03:28:37Z","data":{"nan":"NaN","inf":"+Inf","null":null,"t":true,"f":false}}`,
	`{"name":"unicode é 世界 🎉","timestamp":"2026-11-27T03:28:37Z","step_id":"schritt-ü","data":{"clé":"valeur é","emoji":"🎉","ls":"a\u2028b","raw":"\u00e9"}}`,
	`{"name":"esc\"aped\\\n","timestamp":"2026-11-27T03:28:37Z","data":{"html":"<a href=\"x\">&amp;</a>","escaped html":"\u003cb\u003e","ctl":"tab\there\u0001","slash":"a\/b","k\u0065y":"escaped key","bad surrogate":"\ud800x"}}`,
	`{"name":"nested","timestamp":"2026-11-27T03:28:37Z","data":{"obj":{"z":1,"a":[1,2.5,"<x>",{"n":null}],"m":{"ts":1}},"arr":[],"o":{},"deep":[[[[{"k":[1e-9]}]]]]}}`,
	`{"name":"spaces" , "timestamp" : "2026-11-27T03:28:37Z" , "data" : { "a" : [ 1 , 2 ] , "b" : { } } }`,
	`{"name":"dup","timestamp":"2026-11-27T03:28:37Z","data":{"a":1,"a":2}}`,
	`{"name":"case","Data":{"a":1}}`,
}

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
	var raw tproxy.RawEvent
	fastPaths := 0
	for _, params := range oddEvents {
		var e tproxy.Event
		if err := json.Unmarshal([]byte(params), &e); err != nil {
			t.Fatalf("%s: %v", params, err)
		}
		if err := slow.Event(ctx, e); err != nil {
			t.Fatal(err)
		}
		if tproxy.ParseEvent([]byte(params), &raw) {
			fastPaths++
			err := fast.EventRaw(ctx, &raw)
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
	if want := len(oddEvents) - 3; fastPaths != want {
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
		if n := len(oddEvents); name == logsink.EventsFile && strings.Count(string(want), "\n") != n {
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
	for _, s := range oddEvents {
		f.Add([]byte(s))
	}
	ts := time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)
	var raw tproxy.RawEvent
	f.Fuzz(func(t *testing.T, params []byte) {
		if !tproxy.ParseEvent(params, &raw) {
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
