package tproxy_test

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
)

// TestEventDecodeData: an event's data, as it comes over the wire or from
// events.jsonl, decodes into its payload type; a value of the wrong type
// is an error naming the event.
func TestEventDecodeData(t *testing.T) {
	var e tproxy.Event
	wireForm := `{"name":"step_complete","timestamp":"2026-01-02T03:04:05Z","step_id":"load",
		"data":{"driver":"sql","rows_processed":240,"duration_ms":40.5,"outputs":["table"]}}`
	if err := json.Unmarshal([]byte(wireForm), &e); err != nil {
		t.Fatal(err)
	}
	var got tproxy.StepCompleteData
	if err := e.DecodeData(&got); err != nil {
		t.Fatal(err)
	}
	want := tproxy.StepCompleteData{Driver: "sql", RowsProcessed: 240, DurationMS: 40.5, Outputs: []string{"table"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	bad := tproxy.Event{Name: tproxy.EventStepStart, Data: map[string]any{"step_number": "one"}}
	var st tproxy.StepStartData
	if err := bad.DecodeData(&st); err == nil {
		t.Error("a string step_number decoded")
	}
}
