package tproxy_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
)

var callSeeds = []string{
	`{"jsonrpc":"2.0","id":1,"method":"ping","params":{"data":"bench"}}`,
	`{"id":18446744073709551615,"jsonrpc":"2.0","method":"exec_step","params":{"step_id":"s","driver":"d","config":{"b":1,"a":[1e400]}}}`,
	`{"jsonrpc":"2.0","id":2,"method":"cleanup"}`,
	`{"jsonrpc":"2.0","id":"2","method":"x"}`,
	`{"jsonrpc":"2.0","id":-2,"method":"x","params":[1,"<>"]}`,
	`{"jsonrpc":"2.0","id":3,"method":"x","params":null}`,
	`{"jsonrpc":"2.0","id":3,"method":"x","params":{},"id":4}`,
	`{"id":7,"result":{"status":"pong","echo":"\u00e9<"},"jsonrpc":"2.0"}`,
	`{"id":7,"result":null,"jsonrpc":"2.0"}`,
	`{"id":7,"error":{"code":-32601,"message":"no"},"jsonrpc":"2.0"}`,
	` {"jsonrpc" :"2.0", "result": [ 1 , 2 ] ,"id":0 } `,
}

// FuzzParseRequest checks ParseRequest against jsonrpc2's decoding of the
// same frame: same id, method and params (as JSON values).
func FuzzParseRequest(f *testing.F) {
	for _, s := range callSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		req, ok := tproxy.ParseRequest(frame)
		if !ok {
			return
		}
		var want jsonrpc2.Request
		if err := tproxy.DecodeFrame(frame, &want); err != nil {
			t.Fatalf("accepted %q, which the slow path refuses: %v", frame, err)
		}
		if want.Notif || req.Notif || want.ID != req.ID || want.Method != req.Method || (want.Params == nil) != (req.Params == nil) {
			t.Fatalf("%q: fast %+v, jsonrpc2 %+v", frame, req, want)
		}
		if req.Params != nil && !jsonEqual(t, *req.Params, *want.Params) {
			t.Fatalf("%q: params %s, jsonrpc2 %s", frame, *req.Params, *want.Params)
		}
	})
}

// FuzzParseResponse checks ParseResponse against jsonrpc2's decoding of
// the same frame as a response.
func FuzzParseResponse(f *testing.F) {
	for _, s := range callSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"id":1,"result":2,"error":{"code":1,"message":"m"},"meta":{}}`))
	f.Add([]byte(`{"id":1,"result":2,"error":null}`))
	f.Fuzz(func(t *testing.T, frame []byte) {
		id, result, errObj, ok := tproxy.ParseResponse(frame)
		if !ok {
			return
		}
		var want jsonrpc2.Response
		if err := tproxy.DecodeFrame(frame, &want); err != nil {
			t.Fatalf("accepted %q, which the slow path refuses: %v", frame, err)
		}
		if want.ID != (jsonrpc2.ID{Num: id}) {
			t.Fatalf("%q: fast id %d, jsonrpc2 %+v", frame, id, want.ID)
		}
		if errObj != nil {
			var e jsonrpc2.Error
			if want.Error == nil || json.Unmarshal(errObj, &e) != nil || e.Code != want.Error.Code || e.Message != want.Error.Message {
				t.Fatalf("%q: fast error %s, jsonrpc2 %+v", frame, errObj, want.Error)
			}
			return
		}
		if want.Error != nil || want.Result == nil || !bytes.Equal(result, *want.Result) {
			t.Fatalf("%q: result %s, jsonrpc2 %+v", frame, result, want)
		}
	})
}

// FuzzAppendRequestResponse checks AppendRequest and AppendResponse byte
// for byte against jsonrpc2's encoding through a Stream.
func FuzzAppendRequestResponse(f *testing.F) {
	f.Add("ping", uint64(1), "bench", false, false)
	f.Add("<é>\u2028\"", uint64(1<<63), "a&b\x01", true, true)
	f.Fuzz(func(t *testing.T, method string, id uint64, data string, notif, strID bool) {
		req := &jsonrpc2.Request{Method: method, ID: jsonrpc2.ID{Num: id}, Notif: notif}
		if err := req.SetParams(map[string]any{"data": data, "n": id}); err != nil {
			t.Fatal(err)
		}
		want, err := encodeWithStream(req)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := tproxy.AppendRequest(nil, req)
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("request:\n got %s (%v)\nwant %s", got, ok, want)
		}

		rid := jsonrpc2.ID{Num: id}
		if strID {
			rid = jsonrpc2.ID{Str: data, IsString: true}
		}
		var drivers []string
		if !notif {
			drivers = []string{data, method}
		}
		for _, result := range []any{
			map[string]any{"status": method, "echo": data, "list": []string{data}},
			&tproxy.PingResult{Status: method, Echo: data, Timestamp: time.Unix(0, int64(id)).In(time.FixedZone("z", int(id%7200)*60)),
				Protocol: int(id % 5), Worker: tproxy.WorkerInfo{Name: data, Version: method, Drivers: drivers}},
		} {
			resp := &jsonrpc2.Response{ID: rid}
			if err := resp.SetResult(result); err != nil {
				if _, err := tproxy.AppendResponse(nil, rid, result); err == nil {
					t.Fatalf("%#v: jsonrpc2 cannot encode it, AppendResponse can", result)
				}
				continue
			}
			want, err = encodeWithStream(resp)
			if err != nil {
				t.Fatal(err)
			}
			got, err = tproxy.AppendResponse(nil, rid, result)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("response:\n got %s (%v)\nwant %s", got, err, want)
			}
		}
	})
}

// encodeWithStream is what a jsonrpc2 Conn writes for v through a Stream.
func encodeWithStream(v json.Marshaler) ([]byte, error) {
	var buf bytes.Buffer
	err := tproxy.NewStream(nopCloser{&buf}, 0).WriteObject(v)
	return buf.Bytes(), err
}
