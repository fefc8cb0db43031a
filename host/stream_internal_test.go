package host

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
	"github.com/tproxy/tproxy/logsink"
)

// nopCloser gives a reader the Write and Close of a stream.
type nopCloser struct{ io.Reader }

func (nopCloser) Write(p []byte) (int, error) { return len(p), nil }
func (nopCloser) Close() error                { return nil }

// TestStreamTakesEveryStreamingNotification: a streaming notification in
// a shape the fast lane does not take (members in another order, an extra
// member) is handled by the stream, as the common shape is, and never
// reaches jsonrpc2; a response whose result mentions "method" is still
// jsonrpc2's; a notification with invalid UTF-8 stays a protocol error.
func TestStreamTakesEveryStreamingNotification(t *testing.T) {
	frames := strings.Join([]string{
		`{"params":{"name":"rare","timestamp":"2026-01-02T03:04:05Z"},"method":"event","jsonrpc":"2.0","extra":true}`,
		`{"jsonrpc":"2.0","method":"metric","params":{"name":"m","value":1,"timestamp":"2026-01-02T03:04:05Z"}}`,
		`{"jsonrpc":"2.0","id":1,"result":{"method":"not a notification"}}`,
		"{\"jsonrpc\":\"2.0\",\"method\":\"event\",\"params\":{\"name\":\"bad\xff\",\"timestamp\":\"2026-01-02T03:04:05Z\"},\"x\":1}",
	}, "\n") + "\n"
	mem := &logsink.Memory{}
	c := &Client{cfg: config{sink: mem, logger: slog.New(slog.DiscardHandler)}}
	h := &hostStream{c: c, s: wire.NewStream(nopCloser{strings.NewReader(frames)}, 0)}

	var got json.RawMessage
	if err := h.ReadObject(&got); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), `"id":1`) {
		t.Fatalf("ReadObject returned %s, want the response: the notifications before it are the stream's", got)
	}
	if ev := mem.Events(); len(ev) != 1 || ev[0].Name != "rare" || ev[0].Source != tproxy.SourceWorker {
		t.Errorf("events %+v, want the rare-shape event, from the worker", ev)
	}
	if m := mem.Metrics(); len(m) != 1 {
		t.Errorf("metrics %+v, want the common-shape metric", m)
	}
	var fe *tproxy.FrameError
	if err := h.ReadObject(&got); !errors.As(err, &fe) || fe.Reason != "invalid UTF-8" {
		t.Errorf("invalid UTF-8 in an odd-shaped event: err = %v, want the FrameError jsonrpc2's path gives", err)
	}
}
