package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
)

// badMessage is a frame from the host that is not a request, and the error
// it is answered with (docs/protocol.md section 12).
type badMessage struct {
	code int64
	msg  string
	id   *jsonrpc2.ID // nil: answered with "id": null
}

// decodeMessage decodes a frame from the host, as section 12 asks. It
// returns the request, or nil for a message to ignore (a response: the
// worker makes no calls), or what to answer a frame that is not a request
// with.
func decodeMessage(frame []byte) (*jsonrpc2.Request, *badMessage) {
	if !utf8.Valid(frame) {
		return nil, &badMessage{code: tproxy.CodeParseError, msg: "parse error: the line is not valid UTF-8"}
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(frame, &members); err != nil {
		if !json.Valid(frame) {
			return nil, &badMessage{code: tproxy.CodeParseError, msg: "parse error: " + err.Error()}
		}
		what := "not an object"
		if bytes.HasPrefix(bytes.TrimSpace(frame), []byte("[")) {
			what = "a batch; this protocol sends no batches"
		}
		return nil, &badMessage{code: tproxy.CodeInvalidRequest, msg: "invalid request: the message is " + what}
	}
	if members == nil { // the line is "null"
		return nil, &badMessage{code: tproxy.CodeInvalidRequest, msg: "invalid request: the message is not an object"}
	}
	invalid := func(id *jsonrpc2.ID, format string, a ...any) (*jsonrpc2.Request, *badMessage) {
		return nil, &badMessage{code: tproxy.CodeInvalidRequest, msg: "invalid request: " + fmt.Sprintf(format, a...), id: id}
	}

	rawID, hasID := members["id"]
	var id *jsonrpc2.ID
	if hasID {
		id = new(jsonrpc2.ID)
		// jsonrpc2.ID holds a string or an integer from 0 to 2^64-1,
		// which is what the contract allows a host to send.
		if bytes.Equal(rawID, []byte("null")) || json.Unmarshal(rawID, id) != nil {
			return invalid(nil, "the id %s is neither a string nor a non-negative integer", truncate(rawID, 40))
		}
	}
	if v := members["jsonrpc"]; !bytes.Equal(v, []byte(`"2.0"`)) {
		if v == nil {
			return invalid(id, `the "jsonrpc" member is missing; it must be "2.0"`)
		}
		return invalid(id, `"jsonrpc" is %s; it must be "2.0"`, truncate(v, 40))
	}
	rawMethod, hasMethod := members["method"]
	_, hasResult := members["result"]
	_, hasError := members["error"]
	switch {
	case !hasMethod && (hasResult || hasError) && hasID:
		return nil, nil // a response: ignored
	case !hasMethod:
		return invalid(id, `the "method" member is missing`)
	case hasResult || hasError:
		return invalid(id, `a request has no "result" or "error" member`)
	}
	req := &jsonrpc2.Request{Notif: !hasID}
	if id != nil {
		req.ID = *id
	}
	if err := json.Unmarshal(rawMethod, &req.Method); err != nil {
		return invalid(id, `"method" is not a string`)
	}
	if p, ok := members["params"]; ok && !bytes.Equal(p, []byte("null")) {
		if c := p[0]; c != '{' && c != '[' {
			return invalid(id, `"params" must be an object or an array`)
		}
		params := json.RawMessage(bytes.Clone(p))
		req.Params = &params
	}
	return req, nil
}
