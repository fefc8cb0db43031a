package wire_test

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
)

// notificationSeeds are frames and params in the shapes the fast paths see,
// and the odd ones they must leave to the slow path.
var notificationSeeds = []string{
	`{"jsonrpc":"2.0","method":"event","params":{"name":"tick","timestamp":"2026-11-27T03:28:37.392082914Z","step_id":"s","data":{"i":1}}}`,
	`{"jsonrpc":"2.0","method":"metric","params":{"name":"rows","value":1.5e-7,"timestamp":"2026-11-27T03:28:37Z","tags":{"t":"x"},"unit":"ms"}}`,
	`{"method":"heartbeat","params":{"timestamp":"2026-11-27T03:28:37Z"},"jsonrpc":"2.0"}`,
	` { "jsonrpc" : "2.0" , "method" : "log" , "params" : { "level" : "INFO" , "message" : "hi\n" } } `,
	`{"jsonrpc":"2.0","id":3,"method":"event","params":{}}`,
	`{"jsonrpc":"2.0","method":"event","params":{},"method":"metric"}`,
	`{"jsonrpc":"2.0","method":"ev\u0065nt","params":{}}`,
	`{"jsonrpc":"2.0","method":"event","params":[1]}`,
	`{"jsonrpc":"2.0","method":"event","params":{"data":{"a":1,"a":2}}}`,
	`{"jsonrpc":"2.0","method":"event","params":{"name":"x","data":{"n":1e400}}}`,
	`{"jsonrpc":"2.0","method":"event","params":{"name":"é\u00e9\ud800","data":{"k\u0065y":"<&>","nested":{"b":[1,2.50,{"c":null}],"a":true},"big":12345678901234567890,"neg":-0,"f":1E+2}}}`,
	`{"jsonrpc":"2.0","method":"event","params":{"Name":"case","timestamp":null}}`,
	`{"jsonrpc":"2.0","method":"event","params":{"timestamp":"2026-11-27T03:28:37+01:00","data":{"ts":1,"data.ts":2,"seq":"x"}}}`,
}

// FuzzParseNotification checks ParseNotification against what jsonrpc2
// makes of the same frame: whatever the fast path accepts is valid JSON
// and a notification of that method with those params.
func FuzzParseNotification(f *testing.F) {
	for _, s := range notificationSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		method, params, ok := wire.ParseNotification(frame)
		if !ok {
			return
		}
		if !json.Valid(frame) {
			t.Fatalf("accepted invalid JSON %q", frame)
		}
		var req jsonrpc2.Request
		if err := wire.DecodeFrame(frame, &req); err != nil {
			t.Fatalf("accepted %q, which the slow path refuses: %v", frame, err)
		}
		if !req.Notif || req.Method != method || req.Params == nil {
			t.Fatalf("%q: fast path says %s notification, jsonrpc2 says notif=%v method=%q", frame, method, req.Notif, req.Method)
		}
		if !jsonEqual(t, params, *req.Params) {
			t.Fatalf("%q: params %s, jsonrpc2 has %s", frame, params, *req.Params)
		}
	})
}

// FuzzParseEvent checks ParseEvent differentially against json.Unmarshal
// into an Event: whatever the fast path accepts decodes to the same event.
func FuzzParseEvent(f *testing.F) {
	for _, s := range notificationSeeds {
		if _, params, ok := wire.ParseNotification([]byte(s)); ok {
			f.Add(params)
		}
	}
	f.Add([]byte(`{"name":"a","data":{}}`))
	f.Add([]byte(`{}`))
	var raw wire.RawEvent
	f.Fuzz(func(t *testing.T, params []byte) {
		if !wire.ParseEvent(params, &raw) {
			return
		}
		var e tproxy.Event
		if err := json.Unmarshal(params, &e); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", params, err)
		}
		if raw.Name != e.Name || raw.StepID != e.StepID || !reflect.DeepEqual(raw.Timestamp, e.Timestamp) {
			t.Fatalf("%q: fast %q %q %v, encoding/json %q %q %v", params, raw.Name, raw.StepID, raw.Timestamp, e.Name, e.StepID, e.Timestamp)
		}
		if len(raw.Data) != len(e.Data) {
			t.Fatalf("%q: %d data fields, encoding/json has %d", params, len(raw.Data), len(e.Data))
		}
		for _, fld := range raw.Data {
			var v any
			if err := json.Unmarshal(fld.Value, &v); err != nil {
				t.Fatalf("%q: field %q value %q: %v", params, fld.Key, fld.Value, err)
			}
			if want, ok := e.Data[fld.Key]; !ok || !reflect.DeepEqual(v, want) {
				t.Fatalf("%q: field %q is %#v, encoding/json has %#v", params, fld.Key, v, want)
			}
		}
	})
}

// FuzzAppendNotification checks AppendNotification byte for byte against
// jsonrpc2's encoding of the same notification through a Stream.
func FuzzAppendNotification(f *testing.F) {
	f.Add("tick", "step", "i", "value", int64(1), 2.5, uint8(0), int64(1764213717392082914))
	f.Add("<é>\u2028\"\\", "", "data.ts", "a&b\x01", int64(-1<<60), 1e-7, uint8(1), int64(0))
	f.Add("x", "s", "", "", int64(0), math.Inf(1), uint8(2), int64(-62135596800))
	f.Fuzz(func(t *testing.T, name, step, key, str string, n int64, fl float64, kind uint8, nanos int64) {
		ts := time.Unix(0, nanos).UTC()
		var params any
		switch kind % 4 {
		case 0:
			params = tproxy.Event{Name: name, Timestamp: ts, StepID: step,
				Data: map[string]any{key: str, key + "n": n, key + "f": fl, key + "x": []any{str, nil, true}}}
		case 1:
			params = tproxy.Metric{Name: name, Value: fl, Timestamp: ts, StepID: step, Unit: str, Tags: map[string]string{key: str}}
		case 2:
			params = tproxy.Heartbeat{Timestamp: ts.In(time.FixedZone("x", int(n%200000))), StepID: step}
		case 3:
			params = tproxy.LogRecord{Level: name, Message: str, Timestamp: ts, StepID: step, Attrs: map[string]any{key: fl}}
		}
		for _, method := range []string{tproxy.MethodEvent, name} {
			got, gotErr := wire.AppendNotification([]byte("prefix"), method, params)
			want, wantErr := referenceNotification(method, params)
			if (gotErr != nil) != (wantErr != nil) {
				t.Fatalf("%#v: error %v, jsonrpc2 %v", params, gotErr, wantErr)
			}
			if gotErr != nil {
				if string(got) != "prefix" {
					t.Fatalf("failed append changed dst to %q", got)
				}
				continue
			}
			if !bytes.Equal(got[len("prefix"):], want) {
				t.Fatalf("%#v:\n got %s\nwant %s", params, got[len("prefix"):], want)
			}
		}
	})
}

// referenceNotification is what jsonrpc2's Conn.Notify writes through a
// Stream: it builds a Request and the Stream encodes it.
func referenceNotification(method string, params any) ([]byte, error) {
	req := &jsonrpc2.Request{Method: method, Notif: true}
	if err := req.SetParams(params); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := wire.NewStream(nopCloser{&buf}, 0).WriteObject(req); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	decode := func(b []byte) any {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		if err := d.Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	return reflect.DeepEqual(decode(a), decode(b))
}
