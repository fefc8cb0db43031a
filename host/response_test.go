package host_test

import (
	"errors"
	"testing"

	"github.com/tproxy/tproxy/host"
)

// TestResponseShapes: a response reaches its call whether the read loop's
// fast path parses it or only jsonrpc2 does (extra members, repeated
// keys), for results and errors alike.
func TestResponseShapes(t *testing.T) {
	const result = `"result":{"status":"pong","protocol":1,"worker":{"name":"fake","version":"9"}}`
	const errObj = `"error":{"code":-32601,"message":"no ping here"}`
	tests := []struct {
		name    string
		answer  func(id string) string
		wantErr bool
	}{
		{"result", func(id string) string { return `{"jsonrpc":"2.0","id":` + id + `,` + result + `}` }, false},
		{"result with extra members", func(id string) string {
			return `{"jsonrpc":"2.0","id":` + id + `,` + result + `,"meta":{"a":1},"b":1,"c":2,"d":3,"e":4}`
		}, false},
		{"result with a repeated key", func(id string) string {
			return `{"jsonrpc":"2.0","jsonrpc":"2.0","id":` + id + `,` + result + `}`
		}, false},
		{"error", func(id string) string { return `{"jsonrpc":"2.0","id":` + id + `,` + errObj + `}` }, true},
		{"error with a repeated key", func(id string) string {
			return `{"id":` + id + `,"id":` + id + `,` + errObj + `}`
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := host.Start(t.Context(), fakeWorker(tt.answer, ""))
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if got := c.Worker().Worker.Name; got != "fake" {
					t.Errorf("worker name %q, want fake", got)
				}
				c.Close()
				return
			}
			var re *host.RemoteError
			if !errors.As(err, &re) || re.Code != -32601 || re.Message != "no ping here" {
				t.Fatalf("err = %v, want the worker's RemoteError", err)
			}
		})
	}
}
