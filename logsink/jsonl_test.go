package logsink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

var (
	// ts0 is not UTC on purpose: lines are written in UTC.
	ts0    = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("CEST", 2*3600))
	ts0UTC = "2024-05-06T05:08:09.123456789Z"
	// clock is what SetNow returns, for zero timestamps.
	clock    = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	clockUTC = "2025-01-02T03:04:05Z"
)

// badJSON fails to encode as JSON but prints deterministically.
type badJSON struct{}

func (badJSON) MarshalJSON() ([]byte, error) { return nil, errors.New("no") }
func (badJSON) String() string               { return "bad value" }

func openFiles(t *testing.T, dir string, opts ...logsink.Option) *logsink.Files {
	t.Helper()
	f, err := logsink.OpenDir(dir, "s1", opts...)
	if err != nil {
		t.Fatal(err)
	}
	logsink.SetNow(f, func() time.Time { return clock })
	t.Cleanup(func() { f.Close() })
	return f
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	lines, err := logsink.ReadLines(path)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestFiles_EventLine(t *testing.T) {
	tests := []struct {
		name  string
		event tproxy.Event
		want  string
	}{{
		name:  "name only",
		event: tproxy.Event{Name: "run_start", Timestamp: ts0},
		want:  `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","event":"run_start"}`,
	}, {
		name:  "zero timestamp is the time of writing",
		event: tproxy.Event{Name: "run_start"},
		want:  `{"ts":"` + clockUTC + `","seq":1,"session":"s1","event":"run_start"}`,
	}, {
		name:  "whole seconds",
		event: tproxy.Event{Name: "e", Timestamp: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)},
		want:  `{"ts":"2024-05-06T07:08:09Z","seq":1,"session":"s1","event":"e"}`,
	}, {
		name: "step and data flattened in key order",
		event: tproxy.Event{Name: "step_complete", Timestamp: ts0, StepID: "extract", Data: map[string]any{
			"rows": 42, "b": "x", "a": true, "nested": map[string]any{"k": []any{1, 2.5}}, "none": nil,
		}},
		want: `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","event":"step_complete","step_id":"extract",` +
			`"a":true,"b":"x","nested":{"k":[1,2.5]},"none":null,"rows":42}`,
	}, {
		name: "reserved data keys renamed, nothing lost",
		event: tproxy.Event{Name: "e", Timestamp: ts0, Data: map[string]any{
			"ts": "t", "seq": 7, "session": "other", "event": "x", "metric": "m", "value": 1,
			"value_invalid": "v", "step_id": "s", "unit": "u", "data.ts": "kept", "data.data.ts": "kept too",
		}},
		want: `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","event":"e",` +
			`"data.data.data.ts":"t","data.data.ts":"kept too","data.event":"x","data.metric":"m",` +
			`"data.seq":7,"data.session":"other","data.step_id":"s","data.ts":"kept","data.unit":"u",` +
			`"data.value":1,"data.value_invalid":"v"}`,
	}, {
		name: "values json cannot encode become %v strings",
		event: tproxy.Event{Name: "e", Timestamp: ts0, Data: map[string]any{
			"nan": math.NaN(), "inf": math.Inf(1), "bad": badJSON{}, "in_map": map[string]any{"x": math.NaN()},
		}},
		want: `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","event":"e",` +
			`"bad":"bad value","in_map":"map[x:NaN]","inf":"+Inf","nan":"NaN"}`,
	}, {
		name: "strings escaped as JSON, not as HTML",
		event: tproxy.Event{Name: `say "hi"`, Timestamp: ts0, StepID: "ü", Data: map[string]any{
			"msg": "a<b>&c\n\t\\", "ключ": "значение", "bad_utf8": "\xff",
		}},
		want: `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","event":"say \"hi\"","step_id":"ü",` +
			`"bad_utf8":"\ufffd","msg":"a<b>&c\n\t\\","ключ":"значение"}`,
	}, {
		name: "numbers as encoding/json writes them",
		event: tproxy.Event{Name: "e", Timestamp: ts0, Data: map[string]any{
			"f": 1.5, "big": 1e21, "small": 1e-7, "i64": int64(-3), "u8": uint8(200),
			"num": json.Number("12.50"), "when": ts0,
		}},
		want: `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","event":"e",` +
			`"big":1e+21,"f":1.5,"i64":-3,"num":12.50,"small":1e-7,"u8":200,"when":"2024-05-06T07:08:09.123456789+02:00"}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := openFiles(t, dir)
			if err := f.Event(context.Background(), tt.event); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want+"\n", readFile(t, filepath.Join(dir, logsink.EventsFile))); diff != "" {
				t.Errorf("events.jsonl (-want +got):\n%s", diff)
			}
			if got := readFile(t, filepath.Join(dir, logsink.MetricsFile)); got != "" {
				t.Errorf("metrics.jsonl = %q, want empty", got)
			}
		})
	}
}

func TestFiles_MetricLine(t *testing.T) {
	tests := []struct {
		name   string
		metric tproxy.Metric
		want   string
	}{{
		name:   "name and value",
		metric: tproxy.Metric{Name: "rows_processed", Value: 42, Timestamp: ts0},
		want:   `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","metric":"rows_processed","value":42}`,
	}, {
		name:   "zero timestamp is the time of writing",
		metric: tproxy.Metric{Name: "m", Value: 0},
		want:   `{"ts":"` + clockUTC + `","seq":1,"session":"s1","metric":"m","value":0}`,
	}, {
		name: "step, unit and tags in key order",
		metric: tproxy.Metric{Name: "duration", Value: 1.5, Timestamp: ts0, StepID: "extract", Unit: "ms",
			Tags: map[string]string{"table": "users", "region": "eu"}},
		want: `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","metric":"duration","value":1.5,` +
			`"step_id":"extract","unit":"ms","region":"eu","table":"users"}`,
	}, {
		name:   "unit without step",
		metric: tproxy.Metric{Name: "m", Value: -0.25, Timestamp: ts0, Unit: "s"},
		want:   `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","metric":"m","value":-0.25,"unit":"s"}`,
	}, {
		name:   "exponents as encoding/json writes them",
		metric: tproxy.Metric{Name: "m", Value: 1e-7, Timestamp: ts0},
		want:   `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","metric":"m","value":1e-7}`,
	}, {
		name:   "NaN",
		metric: tproxy.Metric{Name: "ratio", Value: math.NaN(), Timestamp: ts0, StepID: "x"},
		want:   `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","metric":"ratio","value":null,"value_invalid":"NaN","step_id":"x"}`,
	}, {
		name:   "+Inf",
		metric: tproxy.Metric{Name: "ratio", Value: math.Inf(1), Timestamp: ts0},
		want:   `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","metric":"ratio","value":null,"value_invalid":"+Inf"}`,
	}, {
		name:   "-Inf",
		metric: tproxy.Metric{Name: "ratio", Value: math.Inf(-1), Timestamp: ts0},
		want:   `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","metric":"ratio","value":null,"value_invalid":"-Inf"}`,
	}, {
		name: "reserved tag keys renamed",
		metric: tproxy.Metric{Name: "m", Value: 1, Timestamp: ts0, Unit: "ms",
			Tags: map[string]string{"unit": "u", "value": "v", "metric": "x", "value_invalid": "i", "host": "h"}},
		want: `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","metric":"m","value":1,"unit":"ms",` +
			`"data.metric":"x","data.unit":"u","data.value":"v","data.value_invalid":"i","host":"h"}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := openFiles(t, dir)
			if err := f.Metric(context.Background(), tt.metric); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want+"\n", readFile(t, filepath.Join(dir, logsink.MetricsFile))); diff != "" {
				t.Errorf("metrics.jsonl (-want +got):\n%s", diff)
			}
			if got := readFile(t, filepath.Join(dir, logsink.EventsFile)); got != "" {
				t.Errorf("events.jsonl = %q, want empty", got)
			}
		})
	}
}

func TestFiles_UnencodableValueKeepsLine(t *testing.T) {
	dir := t.TempDir()
	f := openFiles(t, dir)
	ch := make(chan int)
	if err := f.Event(context.Background(), tproxy.Event{Name: "e", Data: map[string]any{"ch": ch, "ok": 1}}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, filepath.Join(dir, logsink.EventsFile))
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1", len(lines))
	}
	if got, want := lines[0]["ch"], fmt.Sprint(ch); got != want {
		t.Errorf("ch = %v, want %q", got, want)
	}
	if got := lines[0]["ok"]; got != json.Number("1") {
		t.Errorf("ok = %v, want 1", got)
	}
}

func TestFiles_SeqSharedAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	f := openFiles(t, dir)
	ctx := context.Background()
	// e1 m2 m3 e4 e5 m6
	steps := "emmeem"
	for i, kind := range steps {
		var err error
		if kind == 'e' {
			err = f.Event(ctx, tproxy.Event{Name: fmt.Sprint("e", i+1), Timestamp: ts0})
		} else {
			err = f.Metric(ctx, tproxy.Metric{Name: fmt.Sprint("m", i+1), Value: float64(i), Timestamp: ts0})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	type rec struct{ Seq, Name string }
	var got []rec
	for _, l := range readLines(t, filepath.Join(dir, logsink.EventsFile)) {
		got = append(got, rec{string(l["seq"].(json.Number)), l["event"].(string)})
	}
	for _, l := range readLines(t, filepath.Join(dir, logsink.MetricsFile)) {
		got = append(got, rec{string(l["seq"].(json.Number)), l["metric"].(string)})
	}
	want := []rec{{"1", "e1"}, {"4", "e4"}, {"5", "e5"}, {"2", "m2"}, {"3", "m3"}, {"6", "m6"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestFiles_ManyEventsInOrder(t *testing.T) {
	const n = 10000
	dir := t.TempDir()
	f := openFiles(t, dir)
	ctx := context.Background()
	for i := range n {
		if err := f.Event(ctx, tproxy.Event{Name: "tick", Timestamp: ts0, Data: map[string]any{"i": i}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, filepath.Join(dir, logsink.EventsFile))
	if len(lines) != n {
		t.Fatalf("got %d lines, want %d", len(lines), n)
	}
	for i, l := range lines {
		if l["seq"] != json.Number(fmt.Sprint(i+1)) || l["i"] != json.Number(fmt.Sprint(i)) {
			t.Fatalf("line %d = %v, want seq %d i %d", i+1, l, i+1, i)
		}
	}
}

func TestFiles_Concurrent(t *testing.T) {
	const writers, each = 8, 250
	dir := t.TempDir()
	f := openFiles(t, dir)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				var err error
				if i%2 == 0 {
					err = f.Event(ctx, tproxy.Event{Name: "e", Data: map[string]any{"g": g, "i": i}})
				} else {
					err = f.Metric(ctx, tproxy.Metric{Name: "m", Value: float64(i), Tags: map[string]string{"g": fmt.Sprint(g)}})
				}
				if err == nil && i%50 == 0 {
					err = f.Flush()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	seen := make(map[int64]bool)
	lastI := make(map[string]int64) // per writer, events in its order
	for _, name := range []string{logsink.EventsFile, logsink.MetricsFile} {
		var prev int64
		for _, l := range readLines(t, filepath.Join(dir, name)) {
			seq, _ := l["seq"].(json.Number).Int64()
			if seq <= prev {
				t.Fatalf("%s: seq %d after %d", name, seq, prev)
			}
			prev = seq
			seen[seq] = true
			if name == logsink.EventsFile {
				g := l["g"].(json.Number).String()
				i, _ := l["i"].(json.Number).Int64()
				if last, ok := lastI[g]; ok && i <= last {
					t.Fatalf("writer %s: i %d after %d", g, i, last)
				}
				lastI[g] = i
			}
		}
	}
	for seq := int64(1); seq <= writers*each; seq++ {
		if !seen[seq] {
			t.Fatalf("seq %d missing (saw %d lines)", seq, len(seen))
		}
	}
	if len(seen) != writers*each {
		t.Fatalf("saw %d seqs, want %d", len(seen), writers*each)
	}
}

// devFullDir returns a session directory whose events.jsonl is /dev/full,
// where every write fails with ENOSPC.
func devFullDir(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full:", err)
	}
	dir := t.TempDir()
	if err := os.Symlink("/dev/full", filepath.Join(dir, logsink.EventsFile)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestFiles_WriteErrorIsSticky(t *testing.T) {
	ctx := context.Background()
	big := tproxy.Event{Name: "e", Data: map[string]any{"pad": strings.Repeat("x", 300)}}
	tests := []struct {
		name    string
		opts    []logsink.Option
		failing func(*logsink.Files) error // the call that meets the full disk
	}{{
		name:    "surfaces at flush",
		failing: func(f *logsink.Files) error { return f.Flush() },
	}, {
		name:    "surfaces at write when the buffer fills",
		opts:    []logsink.Option{logsink.WithBufferSize(200)},
		failing: func(f *logsink.Files) error { return f.Event(ctx, big) },
	}, {
		name:    "surfaces at close",
		failing: func(f *logsink.Files) error { return f.Close() },
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := devFullDir(t)
			f := openFiles(t, dir, tt.opts...)
			if err := f.Metric(ctx, tproxy.Metric{Name: "saved", Value: 1, Timestamp: ts0}); err != nil {
				t.Fatal(err)
			}
			if err := f.Event(ctx, tproxy.Event{Name: "e"}); err != nil {
				t.Fatal(err)
			}
			err := tt.failing(f)
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("got %v, want ENOSPC", err)
			}
			path := filepath.Join(dir, logsink.EventsFile)
			if want := "logsink: write " + path + ": no space left on device"; err.Error() != want {
				t.Errorf("error = %q, want %q", err, want)
			}
			var pe *fs.PathError
			if !errors.As(err, &pe) || pe.Path != path {
				t.Errorf("error %v has no *fs.PathError for %s", err, path)
			}
			later := []struct {
				name string
				call func() error
			}{
				{"Event", func() error { return f.Event(ctx, tproxy.Event{Name: "e"}) }},
				{"Metric", func() error { return f.Metric(ctx, tproxy.Metric{Name: "m"}) }},
				{"Flush", f.Flush},
				{"Close", f.Close},
				{"Close again", f.Close},
			}
			for _, c := range later {
				if got := c.call(); got != err {
					t.Errorf("%s after the failure = %v, want the sticky %v", c.name, got, err)
				}
			}
			// The other file is still saved.
			lines := readLines(t, filepath.Join(dir, logsink.MetricsFile))
			if len(lines) != 1 || lines[0]["metric"] != "saved" {
				t.Errorf("metrics.jsonl = %v, want the one metric", lines)
			}
		})
	}
}

func TestOpenDir_Errors(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventsIsDir := filepath.Join(base, "eventsdir")
	if err := os.MkdirAll(filepath.Join(eventsIsDir, logsink.MetricsFile), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		dir     string
		session string
		mention string
		is      error
	}{
		{"dir under a file", filepath.Join(file, "sub"), "s1", filepath.Join(file, "sub"), syscall.ENOTDIR},
		{"log file is a directory", eventsIsDir, "s1", filepath.Join(eventsIsDir, logsink.MetricsFile), syscall.EISDIR},
		{"empty session id", filepath.Join(base, "new"), "", filepath.Join(base, "new"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := logsink.OpenDir(tt.dir, tt.session)
			if err == nil {
				f.Close()
				t.Fatal("OpenDir succeeded")
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not mention %s", err, tt.mention)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

func TestOpenDir_ReadOnlyDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	_, err := logsink.OpenDir(dir, "s1")
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("got %v, want a permission error naming %s", err, dir)
	}
}

func TestOpenDir_CreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	f := openFiles(t, dir)
	if f.Dir() != dir || f.SessionID() != "s1" {
		t.Errorf("Dir, SessionID = %q, %q; want %q, s1", f.Dir(), f.SessionID(), dir)
	}
	for _, name := range []string{logsink.EventsFile, logsink.MetricsFile} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != 0 {
			t.Errorf("%s has %d bytes, want none", name, st.Size())
		}
	}
}

func TestFiles_Close(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := openFiles(t, dir)
	if err := f.Event(ctx, tproxy.Event{Name: "e", Timestamp: ts0}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := f.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if n := len(readLines(t, filepath.Join(dir, logsink.EventsFile))); n != 1 {
		t.Errorf("Close left %d lines, want 1", n)
	}
	for name, call := range map[string]func() error{
		"Event":  func() error { return f.Event(ctx, tproxy.Event{Name: "e"}) },
		"Metric": func() error { return f.Metric(ctx, tproxy.Metric{Name: "m"}) },
		"Flush":  f.Flush,
	} {
		if err := call(); !errors.Is(err, logsink.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestOpenDir_AppendsAndContinuesSeq(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := openFiles(t, dir)
	f.Event(ctx, tproxy.Event{Name: "a", Timestamp: ts0})
	f.Event(ctx, tproxy.Event{Name: "b", Timestamp: ts0})
	f.Metric(ctx, tproxy.Metric{Name: "c", Timestamp: ts0})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	f = openFiles(t, dir)
	if err := f.Event(ctx, tproxy.Event{Name: "d", Timestamp: ts0}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// A crash cut the last line short.
	events := filepath.Join(dir, logsink.EventsFile)
	w, err := os.OpenFile(events, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString(`{"ts":"x","seq":99`)
	w.Close()

	f = openFiles(t, dir)
	if err := f.Metric(ctx, tproxy.Metric{Name: "e", Timestamp: ts0}); err != nil {
		t.Fatal(err)
	}
	if err := f.Event(ctx, tproxy.Event{Name: "f", Timestamp: ts0}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	want := `{"ts":"` + ts0UTC + `","seq":1,"session":"s1","event":"a"}` + "\n" +
		`{"ts":"` + ts0UTC + `","seq":2,"session":"s1","event":"b"}` + "\n" +
		`{"ts":"` + ts0UTC + `","seq":4,"session":"s1","event":"d"}` + "\n" +
		`{"ts":"x","seq":99` + "\n" +
		`{"ts":"` + ts0UTC + `","seq":6,"session":"s1","event":"f"}` + "\n"
	if diff := cmp.Diff(want, readFile(t, events)); diff != "" {
		t.Errorf("events.jsonl (-want +got):\n%s", diff)
	}
	want = `{"ts":"` + ts0UTC + `","seq":3,"session":"s1","metric":"c","value":0}` + "\n" +
		`{"ts":"` + ts0UTC + `","seq":5,"session":"s1","metric":"e","value":0}` + "\n"
	if diff := cmp.Diff(want, readFile(t, filepath.Join(dir, logsink.MetricsFile))); diff != "" {
		t.Errorf("metrics.jsonl (-want +got):\n%s", diff)
	}
}

func TestFiles_WithSync(t *testing.T) {
	dir := t.TempDir()
	f := openFiles(t, dir, logsink.WithSync())
	if err := f.Event(context.Background(), tproxy.Event{Name: "e"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := len(readLines(t, filepath.Join(dir, logsink.EventsFile))); n != 1 {
		t.Errorf("got %d lines after Flush, want 1", n)
	}
}

func TestReadLines(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		want    []map[string]any
		wantErr string // substring after the path
	}{
		{"lines", "{\"a\":1}\n\n{\"b\":\"x\",\"c\":1.50}", []map[string]any{{"a": json.Number("1")}, {"b": "x", "c": json.Number("1.50")}}, ""},
		{"empty", "", nil, ""},
		{"bad line", "{\"a\":1}\n{\"a\":\n", nil, ":2: "},
		{"two objects on a line", "{}\n{} {}\n", nil, ":2: data after the JSON object"},
		{"not an object", "null\n", nil, ":1: not a JSON object"},
		{"array", "[1]\n", nil, ":1: "},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprint(i, ".jsonl"))
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := logsink.ReadLines(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), path+tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, path+tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	missing := filepath.Join(dir, "missing.jsonl")
	if _, err := logsink.ReadLines(missing); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestFiles_FloatsAsEncodingJSON(t *testing.T) {
	values := []float64{0, math.Copysign(0, -1), 1, 0.1, -2.5, 1e20, 1e21, -1e21, 123456789.125, 1e-6, 9.99e-7,
		-1e-10, 5e-324, math.MaxFloat64, 1.7976931348623157e308}
	dir := t.TempDir()
	f := openFiles(t, dir)
	ctx := context.Background()
	for _, v := range values {
		f.Metric(ctx, tproxy.Metric{Name: "m", Value: v, Timestamp: ts0})
		f.Event(ctx, tproxy.Event{Name: "e", Timestamp: ts0, Data: map[string]any{"v": v}})
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	metrics := strings.Split(readFile(t, filepath.Join(dir, logsink.MetricsFile)), "\n")
	events := strings.Split(readFile(t, filepath.Join(dir, logsink.EventsFile)), "\n")
	for i, v := range values {
		want, _ := json.Marshal(v)
		if got, _ := strings.CutSuffix(metrics[i][strings.Index(metrics[i], `"value":`)+len(`"value":`):], "}"); got != string(want) {
			t.Errorf("metric value %v written as %s, encoding/json writes %s", v, got, want)
		}
		if got, _ := strings.CutSuffix(events[i][strings.Index(events[i], `"v":`)+len(`"v":`):], "}"); got != string(want) {
			t.Errorf("data value %v written as %s, encoding/json writes %s", v, got, want)
		}
	}
}
