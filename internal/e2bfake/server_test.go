package e2bfake_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tproxy/tproxy/internal/e2bfake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// These tests speak raw HTTP to the server, to pin the envd behaviours the
// E2B transport relies on or avoids, independently of the transport.

type rawClient struct {
	t     *testing.T
	srv   *e2bfake.Server
	id    string
	token string
}

func newRaw(t *testing.T, opts e2bfake.Options) *rawClient {
	srv, err := e2bfake.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	c := &rawClient{t: t, srv: srv}
	req, _ := http.NewRequest("POST", srv.URL+"/sandboxes", strings.NewReader(`{"templateID":"base","timeout":60,"secure":true}`))
	req.Header.Set("X-API-Key", srv.APIKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb struct {
		SandboxID       string `json:"sandboxID"`
		EnvdAccessToken string `json:"envdAccessToken"`
	}
	if resp.StatusCode != 201 {
		t.Fatalf("create: %s", resp.Status)
	}
	json.NewDecoder(resp.Body).Decode(&sb)
	c.id, c.token = sb.SandboxID, sb.EnvdAccessToken
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	return c
}

func envelope(flags byte, payload string) []byte {
	b := []byte{flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

type envl struct {
	flags   byte
	payload string
}

// start calls Start and returns every envelope of the answer.
func (c *rawClient) start(body string, header map[string]string) (int, []envl) {
	req, _ := http.NewRequest("POST", c.srv.URL+"/process.Process/Start", bytes.NewReader(envelope(0, body)))
	req.Header.Set("Content-Type", "application/connect+json")
	req.Header.Set("E2b-Sandbox-Id", c.id)
	req.Header.Set("X-Access-Token", c.token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return resp.StatusCode, []envl{{0, string(data)}}
	}
	var out []envl
	for len(data) >= 5 {
		n := binary.BigEndian.Uint32(data[1:5])
		out = append(out, envl{data[0], string(data[5 : 5+n])})
		data = data[5+n:]
	}
	return resp.StatusCode, out
}

// TestConnectTimeoutKills: envd turns Connect-Timeout-Ms on Start into
// the process's deadline; this is why the transport never sends it.
func TestConnectTimeoutKills(t *testing.T) {
	c := newRaw(t, e2bfake.Options{})
	status, evs := c.start(`{"process":{"cmd":"/bin/sh","args":["-c","echo hi; sleep 30"]}}`, map[string]string{"Connect-Timeout-Ms": "300"})
	if status != 200 || len(evs) < 2 {
		t.Fatalf("status %d, envelopes %v", status, evs)
	}
	last := evs[len(evs)-1]
	if last.flags != 0x02 || !strings.Contains(last.payload, `"deadline_exceeded"`) {
		t.Errorf("last envelope %+v, want end-of-stream with deadline_exceeded", last)
	}
	if !strings.Contains(evs[0].payload, `"start"`) {
		t.Errorf("first event %q, want start", evs[0].payload)
	}
}

// TestStartEvents: start, data, keepalive and the end event in envd's
// form: zero values omitted, status and error from os.ProcessState.
func TestStartEvents(t *testing.T) {
	c := newRaw(t, e2bfake.Options{KeepaliveInterval: 10 * time.Millisecond})
	_, evs := c.start(`{"process":{"cmd":"/bin/sh","args":["-c","printf out; printf err >&2; sleep 0.1; exit 3"]},"stdin":false}`, nil)
	var got []string
	stdout := ""
	for _, e := range evs[:len(evs)-1] {
		var m struct {
			Event map[string]json.RawMessage `json:"event"`
		}
		if err := json.Unmarshal([]byte(e.payload), &m); err != nil || e.flags != 0 {
			t.Fatalf("envelope %+v: %v", e, err)
		}
		for k, v := range m.Event {
			got = append(got, k)
			if k == "data" {
				var d struct{ Stdout []byte }
				json.Unmarshal(v, &d)
				stdout += string(d.Stdout)
			}
			if k == "end" && !sameJSON(string(v), `{"exitCode":3,"exited":true,"status":"exit status 3","error":"exit status 3"}`) {
				t.Errorf("end event %s", v)
			}
		}
	}
	if got[0] != "start" || got[len(got)-1] != "end" || !strings.Contains(strings.Join(got, ","), "keepalive") {
		t.Errorf("events %v", got)
	}
	if stdout != "out" {
		t.Errorf("stdout %q", stdout)
	}
	if end := evs[len(evs)-1]; end.flags != 0x02 || end.payload != "{}" {
		t.Errorf("end of stream %+v", end)
	}
	_, evs = c.start(`{"process":{"cmd":"/bin/sh","args":["-c","exit 0"]}}`, nil)
	if end := evs[len(evs)-2].payload; !sameJSON(end, `{"event":{"end":{"exited":true,"status":"exit status 0"}}}`) {
		t.Errorf("exit 0 end event %s", end)
	}
}

// sameJSON reports whether two JSON texts hold the same value (protojson
// varies its whitespace on purpose).
func sameJSON(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// TestBadCwd: a Start that fails is HTTP 200 holding only the end
// envelope.
func TestBadCwd(t *testing.T) {
	c := newRaw(t, e2bfake.Options{})
	status, evs := c.start(`{"process":{"cmd":"/bin/true","cwd":"/nonexistent"}}`, nil)
	if status != 200 || len(evs) != 1 || evs[0].flags != 0x02 || !strings.Contains(evs[0].payload, `"error"`) {
		t.Errorf("status %d, envelopes %+v", status, evs)
	}
}

// TestBadAccessToken: envd's 401 is plain JSON, not a Connect envelope.
func TestBadAccessToken(t *testing.T) {
	c := newRaw(t, e2bfake.Options{})
	c.token = "wrong"
	status, evs := c.start(`{"process":{"cmd":"/bin/true"}}`, nil)
	var body struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if status != 401 || json.Unmarshal([]byte(evs[0].payload), &body) != nil || body.Code != 401 || body.Message == "" {
		t.Errorf("status %d, body %q", status, evs[0].payload)
	}
}

// TestStdin: with stdin unset, SendInput reaches the process; with
// stdin:false it fails.
func TestStdin(t *testing.T) {
	c := newRaw(t, e2bfake.Options{})
	for _, tt := range []struct {
		stdin string
		ok    bool
	}{{"", true}, {`,"stdin":false`, false}} {
		req, _ := http.NewRequest("POST", c.srv.URL+"/process.Process/Start",
			bytes.NewReader(envelope(0, `{"process":{"cmd":"/bin/sh","args":["-c","read x; echo got $x"]}`+tt.stdin+`}`)))
		req.Header.Set("Content-Type", "application/connect+json")
		req.Header.Set("E2b-Sandbox-Id", c.id)
		req.Header.Set("X-Access-Token", c.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var hdr [5]byte
		io.ReadFull(resp.Body, hdr[:])
		first := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
		io.ReadFull(resp.Body, first)
		var start struct {
			Event struct {
				Start struct{ Pid int } `json:"start"`
			} `json:"event"`
		}
		json.Unmarshal(first, &start)
		in := `{"process":{"pid":` + strconv.Itoa(start.Event.Start.Pid) + `},"input":{"stdin":"` + base64.StdEncoding.EncodeToString([]byte("hello\n")) + `"}}`
		sreq, _ := http.NewRequest("POST", c.srv.URL+"/process.Process/SendInput", strings.NewReader(in))
		sreq.Header.Set("Content-Type", "application/json")
		sreq.Header.Set("E2b-Sandbox-Id", c.id)
		sreq.Header.Set("X-Access-Token", c.token)
		sresp, err := http.DefaultClient.Do(sreq)
		if err != nil {
			t.Fatal(err)
		}
		sresp.Body.Close()
		if (sresp.StatusCode == 200) != tt.ok {
			t.Errorf("stdin%s: SendInput status %d", tt.stdin, sresp.StatusCode)
		}
		rest, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := bytes.Contains(rest, []byte(base64.StdEncoding.EncodeToString([]byte("got hello\n")))); got != tt.ok {
			t.Errorf("stdin%s: output has the input: %v", tt.stdin, got)
		}
	}
}

// TestStall: a stalled call hangs without an effect until Release, then
// proceeds; a stalled call whose client gives up ends too.
func TestStall(t *testing.T) {
	c := newRaw(t, e2bfake.Options{})
	kill := func(ctx context.Context) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "DELETE", c.srv.URL+"/sandboxes/"+c.id, nil)
		req.Header.Set("X-API-Key", c.srv.APIKey())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	st := c.srv.Stall(e2bfake.OpKill)
	if c.srv.Stall(e2bfake.OpKill) != st {
		t.Error("stalling a stalled op made a second Stall")
	}
	done := make(chan int, 1)
	go func() { code, _ := kill(t.Context()); done <- code }()
	<-st.Arrived()
	if ids := c.srv.Sandboxes(); len(ids) != 1 {
		t.Fatalf("the stalled kill had an effect: sandboxes %v", ids)
	}
	st.Release()
	select {
	case code := <-done:
		if code != http.StatusNoContent {
			t.Errorf("the released kill answered %d, want 204", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the released kill did not answer within 30s")
	}
	if ids := c.srv.Sandboxes(); len(ids) != 0 {
		t.Errorf("sandboxes after the released kill: %v", ids)
	}

	// Left stalled: Close releases it.
	st = c.srv.Stall(e2bfake.OpKill)
	ctx, cancel := context.WithCancel(t.Context())
	gaveUp := make(chan error, 1)
	go func() { _, err := kill(ctx); gaveUp <- err }()
	<-st.Arrived()
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Errorf("a stalled call whose client gave up: %v", err)
	}
}
