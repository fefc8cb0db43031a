package tproxy_test

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
)

// plainPing is PingResult decoded by encoding/json alone, with protocol
// taken as any JSON number and then held to docs/protocol.md's "integer":
// an integral value of at most 2^53.
type plainPing struct {
	Status    string            `json:"status"`
	Echo      string            `json:"echo"`
	Timestamp time.Time         `json:"timestamp"`
	Protocol  float64           `json:"protocol"`
	Worker    tproxy.WorkerInfo `json:"worker"`
}

func (p plainPing) result() (tproxy.PingResult, error) {
	if p.Protocol != math.Trunc(p.Protocol) || math.Abs(p.Protocol) > 1<<53 {
		return tproxy.PingResult{}, fmt.Errorf("protocol %v is not an integer", p.Protocol)
	}
	return tproxy.PingResult{Status: p.Status, Echo: p.Echo, Timestamp: p.Timestamp, Protocol: int(p.Protocol), Worker: p.Worker}, nil
}

// checkPingDecode decodes b into a PingResult (its UnmarshalJSON) and
// into plainPing (encoding/json's reflection), both starting from the
// same populated value, and reports any difference.
func checkPingDecode(t *testing.T, b []byte) {
	t.Helper()
	start := tproxy.PingResult{Status: "old", Echo: "old", Protocol: 9, Timestamp: time.Unix(1, 0).UTC(),
		Worker: tproxy.WorkerInfo{Name: "old", Version: "old", Drivers: []string{"old"}}}
	fast := start
	fast.Worker.Drivers = []string{"old"}
	slow := plainPing{Status: start.Status, Echo: start.Echo, Timestamp: start.Timestamp, Protocol: float64(start.Protocol), Worker: start.Worker}
	slow.Worker.Drivers = []string{"old"}
	errFast := json.Unmarshal(b, &fast)
	errSlow := json.Unmarshal(b, &slow)
	want, errInt := slow.result()
	if errSlow == nil {
		errSlow = errInt
	}
	if (errFast == nil) != (errSlow == nil) {
		t.Fatalf("%q: UnmarshalJSON error %v, encoding/json %v", b, errFast, errSlow)
	}
	if errFast != nil {
		return
	}
	if d := cmp.Diff(want, fast); d != "" {
		t.Fatalf("%q: UnmarshalJSON differs from encoding/json (-json +fast):\n%s", b, d)
	}
}

var pingSeeds = []string{
	`{"status":"pong","echo":"handshake","timestamp":"2026-11-27T07:20:00.123456789Z","protocol":1,"worker":{"name":"demo","version":"0.1.0","drivers":["a","b"]}}`,
	`{"status":"pong","echo":"","timestamp":"2026-11-27T07:20:00Z","protocol":1,"worker":{"name":"w","version":"1","drivers":[]}}`,
	`{"status":"pong","worker":{"name":"only-name"}}`,
	`{"status":"p\u00f6ng","echo":"tab\there","protocol":-0}`,
	`{"status":null,"protocol":1}`,
	`{"Status":"case-insensitive key"}`,
	`{"status":"a","status":"b"}`,
	`{"protocol":1.0}`,
	`{"protocol":"1"}`,
	`{"protocol":99999999999999999999}`,
	`{"timestamp":"not a time"}`,
	`{"timestamp":null}`,
	`{"worker":{"drivers":null}}`,
	`{"worker":{"drivers":["a",1]}}`,
	`{"worker":null}`,
	`{"extra":1,"status":"pong"}`,
	` { "status" : "pong" , "worker" : { "drivers" : [ "x" , "y" ] } } `,
	`{}`,
	`[]`,
	`"pong"`,
	"{\"echo\":\"\xff\"}",
}

func TestPingResultUnmarshalJSON(t *testing.T) {
	for _, s := range pingSeeds {
		checkPingDecode(t, []byte(s))
	}
}

func FuzzPingResultUnmarshalJSON(f *testing.F) {
	for _, s := range pingSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkPingDecode(t, b) })
}
