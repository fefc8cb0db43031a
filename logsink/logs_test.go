package logsink_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/logsink"
)

// TestFilesLog checks logs.jsonl's line format, the seq it shares with
// the other files, and the cap: records past it are dropped and counted,
// after one line saying so, and nothing fails.
func TestFilesLog(t *testing.T) {
	dir := t.TempDir()
	f, err := logsink.OpenDir(dir, "s1", logsink.WithLogCap(400))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Event(ctx, tproxy.Event{Name: "e", Timestamp: ts})
	rec := tproxy.LogRecord{Level: "INFO", Message: "loaded", Timestamp: ts, StepID: "extract", Source: tproxy.SourceWorker,
		Attrs: map[string]any{"rows": 42, "msg": "an attr named like a key", "attr.msg": 1}}
	if err := f.Log(ctx, rec); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := f.Log(ctx, tproxy.LogRecord{Level: "DEBUG", Message: strings.Repeat("x", 50), Timestamp: ts}); err != nil {
			t.Fatalf("a record over the cap: %v, want it dropped without error", err)
		}
	}
	dropped := f.LogsDropped()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, logsink.LogsFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	want0 := `{"ts":"2026-01-02T03:04:05Z","seq":2,"session":"s1","level":"INFO","source":"worker","step_id":"extract","msg":"loaded","attr.msg":1,"attr.attr.msg":"an attr named like a key","rows":42}`
	if lines[0] != want0 {
		t.Errorf("first line\n got %s\nwant %s", lines[0], want0)
	}
	last := lines[len(lines)-1]
	if !strings.Contains(last, `"source":"host"`) || !strings.Contains(last, "reached its cap of 400 bytes") {
		t.Errorf("last line %s: want the host's note that the cap was reached", last)
	}
	if int64(len(lines)-2)+dropped != 10 || dropped == 0 {
		t.Errorf("%d debug lines written and %d dropped, want 10 in all, some dropped", len(lines)-2, dropped)
	}
	if len(b) > 400+200 {
		t.Errorf("logs.jsonl holds %d bytes: the cap is 400 (plus one note)", len(b))
	}
}
