package mask_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/mask"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/internal/wiretest"
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
	*logsink.Files
	raw, decoded int
}

func (c *countingSink) Event(ctx context.Context, e tproxy.Event) error {
	c.decoded++
	return c.Files.Event(ctx, e)
}

func (c *countingSink) EventRaw(ctx context.Context, e *wire.RawEvent) error {
	c.raw++
	raw, _ := wire.RawOf(c.Files)
	return raw(ctx, e)
}

// TestMaskEventRawMatchesEvent: through Mask, the raw fast path records
// exactly what the decoded slow path records, masked, and it is taken
// for the events that have nothing to mask.
func TestMaskEventRawMatchesEvent(t *testing.T) {
	start := time.Now()
	m, err := mask.NewMasker(tproxy.Secrets{})
	if err != nil {
		t.Fatal(err)
	}
	m.AddValues(maskSecret, "SecretValue")
	open := func(dir string) *countingSink {
		f, err := logsink.OpenDir(dir, "sess")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return &countingSink{Files: f}
	}
	slowDir, fastDir := t.TempDir(), t.TempDir()
	slowFiles, fastFiles := open(slowDir), open(fastDir)
	slow := mask.Sink(slowFiles, m)
	fast := mask.Sink(fastFiles, m)
	fastRaw, ok := wire.RawOf(fast)
	if !ok {
		t.Fatal("Mask of a sink that takes raw events does not take them")
	}
	ctx := context.Background()
	var raw wire.RawEvent
	parsed := 0
	for _, params := range append(append([]string(nil), wiretest.OddEvents...), secretEvents...) {
		var e tproxy.Event
		if err := json.Unmarshal([]byte(params), &e); err != nil {
			t.Fatalf("%s: %v", params, err)
		}
		if err := slow.Event(ctx, e); err != nil {
			t.Fatal(err)
		}
		if wire.ParseEvent([]byte(params), &raw) {
			parsed++
			if err := fastRaw(ctx, &raw); err != nil {
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
	// Events without a timestamp are stamped when recorded: each file
	// has its own instant.
	a, b = stampedNow(t, a, start), stampedNow(t, b, start)
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
	if fastFiles.raw == 0 || fastFiles.raw+fastFiles.decoded != len(wiretest.OddEvents)+len(secretEvents) || parsed < len(secretEvents) {
		t.Errorf("fast path taken %d times, slow %d, of %d events (%d parsed): want the fast path for events with nothing to mask",
			fastFiles.raw, fastFiles.decoded, len(wiretest.OddEvents)+len(secretEvents), parsed)
	}
	if fastFiles.decoded < len(secretEvents) {
		t.Errorf("only %d events decoded for masking; %d hold a secret", fastFiles.decoded, len(secretEvents))
	}
}

// TestMaskMasksMetricNamesAndUnits: the metric's worker-controlled
// strings are masked on their way to the files.
func TestMaskMasksMetricNamesAndUnits(t *testing.T) {
	m, _ := mask.NewMasker(tproxy.Secrets{})
	m.AddValues("SecretValue")
	var mem logsink.Memory
	s := mask.Sink(&mem, m)
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

// stampedNow replaces in b the timestamps between start and now, those the
// sink gave events that had none, by "NOW".
func stampedNow(t *testing.T, b []byte, start time.Time) []byte {
	t.Helper()
	end := time.Now()
	re := regexp.MustCompile(`"ts":"([^"]*)"`)
	return re.ReplaceAllFunc(b, func(m []byte) []byte {
		ts, err := time.Parse(time.RFC3339Nano, string(re.FindSubmatch(m)[1]))
		if err == nil && !ts.Before(start.Truncate(time.Microsecond)) && !ts.After(end) {
			return []byte(`"ts":"NOW"`)
		}
		return m
	})
}
