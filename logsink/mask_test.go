package logsink_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

const maskSecret = `Se"cr\etValue12345`

// secretEvents are event params, as they come over the wire, that hold
// maskSecret or a secret key somewhere a worker controls.
var secretEvents = []string{
	`{"name":"step_failed","timestamp":"2026-11-27T03:28:37Z","data":{"message":` + strconv.Quote("open "+strconv.Quote(maskSecret)+": denied") + `}}`,
	`{"name":"ev_SecretValue","timestamp":"2026-11-27T03:28:37Z","data":{"a":1}}`,
	`{"name":"x","timestamp":"2026-11-27T03:28:37Z","step_id":"SecretValue","data":{"a":1}}`,
	`{"name":"x","timestamp":"2026-11-27T03:28:37Z","data":{"k_SecretValue":1}}`,
	`{"name":"x","timestamp":"2026-11-27T03:28:37Z","data":{"password":"anything"}}`,
	`{"name":"x","timestamp":"2026-11-27T03:28:37Z","data":{"nested":{"api_key":7}}}`,
	`{"name":"x","timestamp":"2026-11-27T03:28:37Z","data":{"b64":"` + base64.StdEncoding.EncodeToString([]byte("xSecretValue")) + `"}}`,
	`{"name":"x","timestamp":"2026-11-27T03:28:37Z","data":{"u":"\u0053ecretValue"}}`,
	`{"name":"x","timestamp":"2026-11-27T03:28:37Z","data":{"list":["a","SecretValue"]}}`,
}

// countingSink records which of its methods were called.
type countingSink struct {
	logsink.RawEventSink
	raw, decoded int
}

func (c *countingSink) Event(ctx context.Context, e tproxy.Event) error {
	c.decoded++
	return c.RawEventSink.Event(ctx, e)
}

func (c *countingSink) EventRaw(ctx context.Context, e *tproxy.RawEvent) error {
	c.raw++
	return c.RawEventSink.EventRaw(ctx, e)
}

// TestMaskEventRawMatchesEvent: through Mask, the raw fast path records
// exactly what the decoded slow path records, masked, and it is taken
// for the events that have nothing to mask.
func TestMaskEventRawMatchesEvent(t *testing.T) {
	now := time.Date(2026, 11, 27, 4, 0, 0, 123, time.UTC)
	m, err := tproxy.NewMasker(tproxy.Secrets{})
	if err != nil {
		t.Fatal(err)
	}
	m.AddValues(maskSecret, "SecretValue")
	open := func(dir string) *countingSink {
		f, err := logsink.OpenDir(dir, "sess")
		if err != nil {
			t.Fatal(err)
		}
		logsink.SetNow(f, func() time.Time { return now })
		t.Cleanup(func() { f.Close() })
		return &countingSink{RawEventSink: f}
	}
	slowDir, fastDir := t.TempDir(), t.TempDir()
	slowFiles, fastFiles := open(slowDir), open(fastDir)
	slow := logsink.Mask(slowFiles, m)
	fast, ok := logsink.Mask(fastFiles, m).(logsink.RawEventSink)
	if !ok {
		t.Fatal("Mask of a RawEventSink is not a RawEventSink")
	}
	ctx := context.Background()
	var raw tproxy.RawEvent
	parsed := 0
	for _, params := range append(append([]string(nil), oddEvents...), secretEvents...) {
		var e tproxy.Event
		if err := json.Unmarshal([]byte(params), &e); err != nil {
			t.Fatalf("%s: %v", params, err)
		}
		if err := slow.Event(ctx, e); err != nil {
			t.Fatal(err)
		}
		if tproxy.ParseEvent([]byte(params), &raw) {
			parsed++
			if err := fast.EventRaw(ctx, &raw); err != nil {
				t.Fatal(err)
			}
		} else if err := fast.Event(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	slow.Flush()
	fast.Flush()
	a, _ := os.ReadFile(filepath.Join(slowDir, logsink.EventsFile))
	b, _ := os.ReadFile(filepath.Join(fastDir, logsink.EventsFile))
	if string(a) != string(b) {
		t.Errorf("masked through EventRaw:\n%s\nmasked through Event:\n%s", b, a)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var v any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatal(err)
		}
		for _, s := range allStrings(v, nil) {
			for _, leak := range []string{"SecretValue", "ecretValue", "anything", base64.StdEncoding.EncodeToString([]byte("xSecretValue"))[4:]} {
				if strings.Contains(s, leak) {
					t.Errorf("events.jsonl holds %q in %q", leak, s)
				}
			}
		}
		if strings.Contains(line, `"api_key":7`) {
			t.Errorf("events.jsonl holds a nested secret key's value: %s", line)
		}
	}
	if fastFiles.raw == 0 || fastFiles.raw+fastFiles.decoded != len(oddEvents)+len(secretEvents) || parsed < len(secretEvents) {
		t.Errorf("fast path taken %d times, slow %d, of %d events (%d parsed): want the fast path for events with nothing to mask",
			fastFiles.raw, fastFiles.decoded, len(oddEvents)+len(secretEvents), parsed)
	}
	if fastFiles.decoded < len(secretEvents) {
		t.Errorf("only %d events decoded for masking; %d hold a secret", fastFiles.decoded, len(secretEvents))
	}
}

// TestMaskMasksMetricNamesAndUnits: the metric's worker-controlled
// strings are masked on their way to the files.
func TestMaskMasksMetricNamesAndUnits(t *testing.T) {
	m, _ := tproxy.NewMasker(tproxy.Secrets{})
	m.AddValues("SecretValue")
	var mem logsink.Memory
	s := logsink.Mask(&mem, m)
	s.Metric(context.Background(), tproxy.Metric{Name: "m_SecretValue", Unit: "u_SecretValue", Tags: map[string]string{"k_SecretValue": "v"}})
	got := mem.Metrics()
	if len(got) != 1 {
		t.Fatalf("metrics = %v", got)
	}
	b, _ := json.Marshal(got[0])
	if strings.Contains(string(b), "SecretValue") {
		t.Errorf("metric = %s", b)
	}
}

// allStrings appends every key and string value in v, a decoded JSON
// value.
func allStrings(v any, out []string) []string {
	switch x := v.(type) {
	case string:
		out = append(out, x)
	case []any:
		for _, e := range x {
			out = allStrings(e, out)
		}
	case map[string]any:
		for k, e := range x {
			out = allStrings(e, append(out, k))
		}
	}
	return out
}
