package tproxy

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"
)

// Requests and responses in their common shapes, encoded and decoded
// without jsonrpc2's maps: the bytes are what jsonrpc2 writes, and what is
// decoded is what jsonrpc2 would decode (see the fuzz tests). Anything else
// is reported as not handled and takes jsonrpc2's own path.

// member is one member of a JSON object being scanned.
type member struct {
	key   string // unescaped only if it had no escapes; "" otherwise
	value []byte
}

// scanObject scans the frame as one JSON object of at most len(dst)
// members, none with escapes in its key, and returns them. ok is false for
// anything else, including invalid UTF-8 and duplicate keys.
func scanObject(frame []byte, dst []member) (members []member, ok bool) {
	if !utf8.Valid(frame) {
		return nil, false
	}
	i := skipSpace(frame, 0)
	if i >= len(frame) || frame[i] != '{' {
		return nil, false
	}
	members = dst[:0]
	for i++; ; i++ {
		i = skipSpace(frame, i)
		end, escaped := scanString(frame, i)
		if end < 0 || escaped || len(members) == cap(dst) {
			return nil, false
		}
		key := frame[i+1 : end-1]
		for _, m := range members {
			if m.key == string(key) {
				return nil, false
			}
		}
		if i = skipSpace(frame, end); i >= len(frame) || frame[i] != ':' {
			return nil, false
		}
		i = skipSpace(frame, i+1)
		end = scanValue(frame, i, 0, false)
		if end < 0 {
			return nil, false
		}
		members = append(members, member{key: string(key), value: frame[i:end]})
		if i = skipSpace(frame, end); i >= len(frame) {
			return nil, false
		}
		if frame[i] == '}' {
			break
		}
		if frame[i] != ',' {
			return nil, false
		}
	}
	return members, skipSpace(frame, i+1) == len(frame)
}

// parseID parses a JSON-RPC id that is a plain integer of at most 18
// digits, which every JSON-RPC library decodes to the same number.
func parseID(v []byte) (uint64, bool) {
	if len(v) == 0 || len(v) > 18 || v[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	return n, err == nil
}

// ParseRequest recognises a frame that is a JSON-RPC 2.0 request in the
// common shape: exactly the members "jsonrpc" ("2.0"), "id" (an integer of
// at most 18 digits), "method" (a string without escapes) and optionally
// "params" (an object or an array), in any order. It returns the request
// with a copy of the params as they came: jsonrpc2 would hand over the
// same JSON value, re-encoded with sorted keys.
//
// ok is false for every other frame, valid or not; it then takes
// jsonrpc2's path, which decides what it is.
func ParseRequest(frame []byte) (req *jsonrpc2.Request, ok bool) {
	var arr [4]member
	members, ok := scanObject(frame, arr[:])
	if !ok {
		return nil, false
	}
	req = &jsonrpc2.Request{}
	var seenID, seenVersion, seenMethod bool
	for _, m := range members {
		switch m.key {
		case "jsonrpc":
			seenVersion = string(m.value) == `"2.0"`
		case "id":
			req.ID.Num, seenID = parseID(m.value)
		case "method":
			end, escaped := scanString(m.value, 0)
			if end < 0 || escaped {
				return nil, false
			}
			req.Method, seenMethod = string(m.value[1:len(m.value)-1]), true
		case "params":
			if c := m.value[0]; c != '{' && c != '[' {
				return nil, false
			}
			params := json.RawMessage(bytes.Clone(m.value))
			req.Params = &params
		default:
			return nil, false
		}
	}
	return req, seenID && seenVersion && seenMethod
}

// ParseResponse recognises a frame that is a JSON-RPC 2.0 response to a
// request with a numeric id: a JSON object with an "id" member that is an
// integer of at most 18 digits, a "result" member or an "error" member
// that is an object (the error wins if both are there, as in jsonrpc2),
// no "method" member, and at most six members, none repeated. It returns
// the id and the result or the error object, slices of frame.
//
// ok is false for every other frame, valid or not.
func ParseResponse(frame []byte) (id uint64, result, errObj []byte, ok bool) {
	var arr [6]member
	members, ok := scanObject(frame, arr[:])
	if !ok {
		return 0, nil, nil, false
	}
	var seenID bool
	for _, m := range members {
		switch m.key {
		case "id":
			id, seenID = parseID(m.value)
		case "result":
			result = m.value
		case "error":
			if m.value[0] == '{' {
				errObj = m.value
			}
		case "method":
			return 0, nil, nil, false
		}
	}
	if errObj != nil {
		result = nil
		// Error responses are rare: let encoding/json judge the object,
		// so that one jsonrpc2 would refuse (a string code, say) takes
		// the slow path and its protocol error.
		var e jsonrpc2.Error
		if json.Unmarshal(errObj, &e) != nil {
			return 0, nil, nil, false
		}
	}
	return id, result, errObj, seenID && (result != nil || errObj != nil)
}

// AppendRequest appends req as one line, newline included: byte for byte
// what jsonrpc2 writes through a Stream for a request (or notification)
// whose params were encoded by encoding/json, as jsonrpc2's Call, Notify
// and SetParams do. It returns false, and dst unchanged, for a request
// with a string id, meta or extra fields; write those with WriteObject.
func AppendRequest(dst []byte, req *jsonrpc2.Request) ([]byte, bool) {
	if req.ID.IsString || req.Meta != nil || len(req.ExtraFields) > 0 {
		return dst, false
	}
	// jsonrpc2 marshals a map: the keys come out sorted.
	dst = append(dst, '{')
	if !req.Notif {
		dst = append(dst, `"id":`...)
		dst = strconv.AppendUint(dst, req.ID.Num, 10)
		dst = append(dst, ',')
	}
	dst = append(dst, `"jsonrpc":"2.0","method":`...)
	dst = appendJSONString(dst, req.Method)
	if req.Params != nil {
		dst = append(dst, `,"params":`...)
		dst = append(dst, *req.Params...)
	}
	return append(dst, '}', '\n'), true
}

// AppendResponse appends the successful response to request id with
// result as one line, newline included: byte for byte what jsonrpc2's
// Conn.Reply writes through a Stream. It returns encoding/json's error for
// a result it cannot encode, and then dst unchanged.
func AppendResponse(dst []byte, id jsonrpc2.ID, result any) ([]byte, error) {
	start := len(dst)
	dst = append(dst, `{"id":`...)
	if id.IsString {
		dst = appendJSONString(dst, id.Str)
	} else {
		dst = strconv.AppendUint(dst, id.Num, 10)
	}
	dst = append(dst, `,"result":`...)
	var err error
	switch r := result.(type) {
	case *PingResult:
		dst, err = appendPingResult(dst, r)
	default:
		dst, err = appendMarshal(dst, result)
	}
	if err != nil {
		return dst[:start], err
	}
	return append(dst, `,"jsonrpc":"2.0"}`+"\n"...), nil
}
