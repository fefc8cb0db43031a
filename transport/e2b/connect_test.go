package e2b

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"syscall"
	"testing"

	"github.com/tproxy/tproxy/transport"
)

// streamOf builds a response stream from event payloads and an end.
func streamOf(events []string, end string) []byte {
	var b []byte
	for _, e := range events {
		b = appendEnvelope(b, 0, []byte(e))
	}
	return appendEnvelope(b, flagEndStream, []byte(end))
}

func readAll(t *testing.T, data []byte, gz bool) ([]*processEvent, error) {
	t.Helper()
	s := &eventStream{body: io.NopCloser(nil), er: newEnvelopeReader(bytes.NewReader(data), gz)}
	var out []*processEvent
	for {
		ev, err := s.next()
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
}

// TestDecodeStream pins the decoding of a Start stream as envd writes it.
func TestDecodeStream(t *testing.T) {
	data := streamOf([]string{
		`{"event":{"start":{"pid":42}}}`,
		`{"event":{"keepalive":{}}}`,
		`{"event":{"data":{"stdout":"aMM="}}}`, // "h\xc3": "é" is split across two events
		`{"event":{"data":{"stdout":"qQ=="}}}`, // "\xa9"
		`{"event":{"data":{"stderr":"b29wcwo="}}}`,
		`{"event":{"end":{"exitCode":-1,"status":"signal: killed","error":"signal: killed"}}}`,
	}, `{}`)
	evs, err := readAll(t, data, false)
	if err != io.EOF {
		t.Fatalf("err = %v, want io.EOF at a clean end", err)
	}
	if len(evs) != 6 || evs[0].Start.Pid != 42 || evs[1].Keepalive == nil {
		t.Fatalf("events: %+v", evs)
	}
	if got := string(evs[2].Data.Stdout) + string(evs[3].Data.Stdout); got != "hé" {
		t.Errorf("stdout %q", got)
	}
	if string(evs[4].Data.Stderr) != "oops\n" {
		t.Errorf("stderr %q", evs[4].Data.Stderr)
	}
	if st := evs[5].End.exitStatus(); st != (transport.ExitStatus{Code: -1, Signal: syscall.SIGKILL}) {
		t.Errorf("status %#v", st)
	}
}

func TestEndStatus(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want transport.ExitStatus
	}{
		{`{"exited":true,"status":"exit status 0"}`, transport.ExitStatus{}},
		{`{"exitCode":3,"exited":true,"status":"exit status 3","error":"exit status 3"}`, transport.ExitStatus{Code: 3}},
		{`{"exit_code":"4","exited":true,"status":"exit status 4"}`, transport.ExitStatus{Code: 4}},
		{`{"exitCode":-1,"status":"signal: terminated","error":"signal: terminated"}`, transport.ExitStatus{Code: -1, Signal: syscall.SIGTERM}},
		{`{"exitCode":-1,"status":"signal: segmentation fault (core dumped)"}`, transport.ExitStatus{Code: -1, Signal: syscall.SIGSEGV}},
		{`{"exitCode":-1,"error":"context deadline exceeded"}`, transport.ExitStatus{Code: -1, Reason: "context deadline exceeded"}},
		{`{}`, transport.ExitStatus{Code: -1, Reason: "the process ended without an exit status"}},
	} {
		var e endEvent
		if err := json.Unmarshal([]byte(tt.in), &e); err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if got := e.exitStatus(); got != tt.want {
			t.Errorf("%s: %#v, want %#v", tt.in, got, tt.want)
		}
	}
}

// TestDecodeErrors: a stream's failures are told apart.
func TestDecodeErrors(t *testing.T) {
	_, err := readAll(t, streamOf(nil, `{"error":{"code":"deadline_exceeded","message":"context deadline exceeded"}}`), false)
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Code != "deadline_exceeded" {
		t.Errorf("error end: err = %v, want a *ConnectError deadline_exceeded", err)
	}
	data := streamOf([]string{`{"event":{"start":{"pid":1}}}`}, `{}`)
	if _, err := readAll(t, data[:len(data)-3], false); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated: err = %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := readAll(t, appendEnvelope(nil, 0, []byte(`{"event":{"start":{"pid":1}}}`)), false); err != io.ErrUnexpectedEOF {
		t.Errorf("no end envelope: err = %v, want io.ErrUnexpectedEOF", err)
	}
	huge := []byte{0, 0xff, 0xff, 0xff, 0xff}
	if _, err := readAll(t, huge, false); !errors.Is(err, ErrEnvelopeTooLarge) {
		t.Errorf("huge: err = %v, want ErrEnvelopeTooLarge", err)
	}
	if _, err := readAll(t, streamOf([]string{`{"event":{}}`}, `{}`), false); err == nil {
		t.Error("an event with no member was accepted")
	}
	if _, err := readAll(t, streamOf([]string{`{"event":{"start":{"pid":1},"keepalive":{}}}`}, `{}`), false); err == nil {
		t.Error("an event with two members was accepted")
	}
}

// TestGzipEnvelope: compressed envelopes are read when negotiated, and
// refused otherwise.
func TestGzipEnvelope(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte(`{"event":{"data":{"stdout":"aGk="}}}`))
	zw.Close()
	data := appendEnvelope(appendEnvelope(nil, flagCompressed, z.Bytes()), flagEndStream, []byte("{}"))
	evs, err := readAll(t, data, true)
	if err != io.EOF || len(evs) != 1 || string(evs[0].Data.Stdout) != "hi" {
		t.Errorf("gzip: %v %+v", err, evs)
	}
	if _, err := readAll(t, data, false); err == nil || err == io.EOF {
		t.Errorf("compressed envelope without negotiation: err = %v", err)
	}
}

// FuzzDecodeStream feeds arbitrary bytes to the envelope reader and event
// decoder: no panic, no hang, and every event returned has exactly one
// member.
func FuzzDecodeStream(f *testing.F) {
	f.Add(streamOf([]string{`{"event":{"start":{"pid":42}}}`, `{"event":{"data":{"stdout":"aGk="}}}`}, `{}`), false)
	f.Add(streamOf([]string{`{"event":{"end":{"exitCode":3,"exited":true,"status":"exit status 3"}}}`}, `{"error":{"code":"x"}}`), false)
	f.Add([]byte{2, 0, 0, 0, 2, '{', '}'}, false)
	f.Add([]byte{1, 0, 0, 0, 3, 1, 2, 3}, true)
	f.Fuzz(func(t *testing.T, data []byte, gz bool) {
		s := &eventStream{body: io.NopCloser(nil), er: newEnvelopeReader(bytes.NewReader(data), gz)}
		for i := 0; ; i++ {
			ev, err := s.next()
			if err != nil {
				return
			}
			n := 0
			for _, set := range []bool{ev.Start != nil, ev.Data != nil, ev.End != nil, ev.Keepalive != nil} {
				if set {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("event with %d members: %+v", n, ev)
			}
			if ev.End != nil {
				_ = ev.End.exitStatus().String()
			}
			if i > len(data) {
				t.Fatal("more events than input bytes")
			}
		}
	})
}
