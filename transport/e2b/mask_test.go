package e2b

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
)

// leak returns the first piece of key longer than 4 bytes found in s, or
// "".
func leak(s, key string) string {
	for i := 0; i+5 <= len(key); i++ {
		if strings.Contains(s, key[i:i+5]) {
			// Report the longest piece, for the message.
			j := i + 5
			for j < len(key) && strings.Contains(s, key[i:j+1]) {
				j++
			}
			return key[i:j]
		}
	}
	return ""
}

// apiErrorOf runs the error decoding of a response with status and body.
func apiErrorOf(key, op string, status int, body []byte) *APIError {
	c := &client{apiKey: key, secrets: secrets{key}}
	resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body))}
	return c.apiError(op, resp)
}

// leaks reports every field of e, and its message, that holds a piece of
// key longer than 4 bytes.
func leaks(e *APIError, key string) []string {
	var out []string
	for _, f := range []struct{ name, v string }{{"Error()", e.Error()}, {"Op", e.Op}, {"Code", e.Code}, {"Message", e.Message}} {
		if l := leak(f.v, key); l != "" {
			out = append(out, fmt.Sprintf("%s holds %q (%d bytes): %q", f.name, l, len(l), f.v))
		}
	}
	return out
}

// testKeys are the fake's key (the red team's 36 characters) and one of
// the real form, e2b_ and 40 hex digits.
func testKeys() []string {
	h := sha256.Sum256([]byte("a key"))
	return []string{"e2b_0123456789abcdef0123456789abcdef", "e2b_" + hex.EncodeToString(h[:])[:40]}
}

// TestAPIErrorMasksKeyAtEveryOffset: an error body echoing the API key,
// whole or in part, at any offset around the 300-byte cut of a non-JSON
// body, in the code or the message of a JSON body, or in the sandbox id
// of the operation, leaves no piece of the key longer than 4 bytes in the
// error's message or in any of its fields.
func TestAPIErrorMasksKeyAtEveryOffset(t *testing.T) {
	for _, key := range testKeys() {
		var bodies []string
		for off := 0; off <= 340; off++ {
			pad := strings.Repeat("x", off)
			bodies = append(bodies,
				pad+key+" trailing text",
				pad+key,
				pad+key+key,
				pad+key[7:30]+" a piece",
				"<html>"+pad+key+"</html>")
		}
		for _, piece := range []string{key, key[:5], key[len(key)-5:], key[10:20], strings.ToUpper(key[:4]) + key[4:]} {
			q := fmt.Sprintf("%q", piece)
			bodies = append(bodies,
				`{"code":`+q+`,"message":"bad"}`,
				`{"code":401,"message":`+q+`}`,
				`{"code":`+q+`,"message":"the key "`+`}`,
				`{"code":"e2b\u005f`+piece[4:]+`","message":"escaped"}`,
				`{"code":500,"message":"key `+piece+` refused `+piece+`"}`,
				`{"code":"unauthenticated","message":"`+strings.Repeat("y", 400)+piece+`"}`,
			)
		}
		for _, status := range []int{400, 401, 500, 502} {
			for _, body := range bodies {
				for _, op := range []string{"create sandbox", "kill sandbox i" + key[3:12] + "x", "kill sandbox " + key} {
					e := apiErrorOf(key, op, status, []byte(body))
					for _, l := range leaks(e, key) {
						t.Errorf("key %s, status %d, op %q, body %q: %s", key[:8], status, op, body, l)
					}
				}
			}
		}
	}
}

// FuzzAPIErrorNeverLeaksKey: whatever the body, wherever the key or a
// piece of it is put into it, no piece of the key longer than 4 bytes
// survives in the *APIError.
func FuzzAPIErrorNeverLeaksKey(f *testing.F) {
	f.Add([]byte("plain text"), uint16(0), uint8(0), uint8(36), uint16(401), false)
	f.Add([]byte(strings.Repeat("x", 290)), uint16(290), uint8(0), uint8(36), uint16(500), false)
	f.Add([]byte(`{"code":"","message":""}`), uint16(9), uint8(0), uint8(36), uint16(401), true)
	f.Add([]byte(`{"code":401,"message":""}`), uint16(23), uint8(3), uint8(20), uint16(401), true)
	f.Fuzz(func(t *testing.T, body []byte, at uint16, from, to uint8, status uint16, realKey bool) {
		key := testKeys()[0]
		if realKey {
			key = testKeys()[1]
		}
		from, to = min(from, to), max(from, to)
		piece := key[min(int(from), len(key)):min(int(to), len(key))]
		pos := min(int(at), len(body))
		b := append(append(append([]byte{}, body[:pos]...), piece...), body[pos:]...)
		e := apiErrorOf(key, "kill sandbox "+piece, int(status%600), b)
		for _, l := range leaks(e, key) {
			t.Errorf("body %q: %s", b, l)
		}
	})
}

// TestMaskErrKeepsIsAndAs: an error whose message held the key comes out
// masked, still matches what it matched with errors.Is and still yields
// its (masked) *APIError to errors.As, but nothing reaches the unmasked
// text.
func TestMaskErrKeepsIsAndAs(t *testing.T) {
	key := testKeys()[1]
	s := secrets{key}
	ue := &url.Error{Op: "Get", URL: "https://api.example/" + key[2:20], Err: context.Canceled}
	ae := apiErrorOf(key, "list sandboxes", 500, []byte("oops"))
	for _, tt := range []struct {
		name string
		err  error
		is   error
		api  bool
	}{
		{"url error", ue, context.Canceled, false},
		{"joined", errors.Join(fmt.Errorf("e2b: start: %w", ue), ae), context.Canceled, true},
		{"clean", fmt.Errorf("e2b: nothing secret: %w", os.ErrDeadlineExceeded), os.ErrDeadlineExceeded, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := s.maskErr(tt.err)
			if l := leak(err.Error(), key); l != "" {
				t.Errorf("%q holds %q", err, l)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			var got *APIError
			if errors.As(err, &got) != tt.api {
				t.Errorf("errors.As *APIError = %v, want %v", !tt.api, tt.api)
			}
			var u *url.Error
			if errors.As(err, &u) && leak(u.Error(), key) != "" {
				t.Errorf("errors.As reaches the unmasked %q", u)
			}
		})
	}
	if s.maskErr(nil) != nil {
		t.Error("maskErr(nil) != nil")
	}
}

// TestMaskOddKeys: keys that share pieces with the mask itself, or repeat
// one character, leave no piece of themselves either.
func TestMaskOddKeys(t *testing.T) {
	for _, key := range []string{masked, "MASKED*****secret", "aaaaaaaaaaaa", "*****"} {
		for _, msg := range []string{key, "x" + key + "y", key[1:] + " and " + key[:len(key)-1], "nothing here", "aaaa"} {
			got := secrets{key}.mask(msg)
			if l := leak(got, key); l != "" {
				t.Errorf("key %q, msg %q: %q holds %q", key, msg, got, l)
			}
		}
	}
}
