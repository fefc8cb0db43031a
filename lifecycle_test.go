package tproxy_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/check"
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

// TestHostEventsReserved: the event names a worker may not send
// (internal/check.EventName) are exactly the Event* constants documented
// as the host's, so a host event added to lifecycle.go cannot be forged by
// a worker, and no worker event is refused.
func TestHostEventsReserved(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "lifecycle.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			name := vs.Names[0].Name
			if !strings.HasPrefix(name, "Event") || vs.Doc == nil {
				continue
			}
			value, err := strconv.Unquote(vs.Values[0].(*ast.BasicLit).Value)
			if err != nil {
				t.Fatal(err)
			}
			host := strings.HasPrefix(vs.Doc.Text(), name+" (host")
			if err := check.EventName(value); (err != nil) != host {
				t.Errorf("%s = %q: documented as the host's: %v, refused from a worker: %v", name, value, host, err)
			}
			n++
		}
	}
	if n < 15 {
		t.Errorf("found %d Event constants in lifecycle.go; the parse is wrong", n)
	}
}
