package wire_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sourcegraph/jsonrpc2"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
)

// chunks is a reader that hands out its data in pieces of the given sizes
// (cycling), as a pipe or E2B's process stream would.
type chunks struct {
	data  []byte
	sizes []int
	i     int
	w     bytes.Buffer
}

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		n = min(n, max(1, c.sizes[c.i%len(c.sizes)]))
		c.i++
	}
	n = copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func (c *chunks) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *chunks) Close() error                { return nil }

func readAll(t *testing.T, s *wire.Stream) (frames []string, errs []error) {
	t.Helper()
	for range 1000 {
		f, err := s.ReadFrame()
		if err == io.EOF {
			return frames, errs
		}
		if err != nil {
			errs = append(errs, err)
			var fe *tproxy.FrameError
			if !errors.As(err, &fe) || errors.Is(err, io.ErrUnexpectedEOF) {
				return frames, errs
			}
			continue
		}
		frames = append(frames, string(f))
	}
	t.Fatal("stream did not end")
	return nil, nil
}

func TestStreamReadFrame(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		name    string
		in      string
		max     int
		sizes   []int
		want    []string
		wantErr []string // substrings, one per error, in order
	}{
		{name: "lines", in: "{\"a\":1}\n{\"b\":2}\n", want: []string{`{"a":1}`, `{"b":2}`}},
		{name: "one byte chunks", in: "{\"a\":1}\n{\"b\":2}\n", sizes: []int{1}, want: []string{`{"a":1}`, `{"b":2}`}},
		{name: "crlf and blank lines", in: "\n{\"a\":1}\r\n  \n\r\n{\"b\":2}\n", want: []string{`{"a":1}`, `{"b":2}`}},
		{name: "multibyte split across chunks", in: "{\"s\":\"héllo→世界\"}\n", sizes: []int{8, 1, 1, 1}, want: []string{`{"s":"héllo→世界"}`}},
		{name: "frame exactly at cap", in: long + "\n", max: 100, sizes: []int{7}, want: []string{long}},
		{name: "oversize then next frame", in: long + "x\n{}\n", max: 100, sizes: []int{7},
			want: []string{"{}"}, wantErr: []string{"read frame: frame too large (101 bytes, cap 100); starts \"xxxx"}},
		{name: "oversize in fast path", in: long + "x\n{}\n", max: 50,
			want: []string{"{}"}, wantErr: []string{"(101 bytes, cap 50)"}},
		{name: "oversize at end of stream", in: long, max: 10, wantErr: []string{"frame too large (100 bytes, cap 10)"}},
		{name: "partial frame at end", in: "{}\n{\"a\":", want: []string{"{}"},
			wantErr: []string{"stream ended inside a frame: unexpected EOF; starts \"{\\\"a\\\":\""}},
		{name: "longer than reader buffer", in: strings.Repeat("y", 200<<10) + "\n", sizes: []int{4096},
			want: []string{strings.Repeat("y", 200<<10)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := wire.NewStream(&chunks{data: []byte(tt.in), sizes: tt.sizes}, tt.max)
			frames, errs := readAll(t, s)
			if diff := cmp.Diff(tt.want, frames); diff != "" {
				t.Errorf("frames (-want +got):\n%s", diff)
			}
			if len(errs) != len(tt.wantErr) {
				t.Fatalf("errors = %v, want %d matching %q", errs, len(tt.wantErr), tt.wantErr)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tt.wantErr[i]) {
					t.Errorf("error %d = %q, want it to contain %q", i, err, tt.wantErr[i])
				}
			}
		})
	}
}

func TestStreamOversizeIsErrFrameTooLarge(t *testing.T) {
	s := wire.NewStream(&chunks{data: []byte(strings.Repeat("z", 5000) + "\n")}, 1000)
	_, err := s.ReadFrame()
	var fe *tproxy.FrameError
	if !errors.Is(err, tproxy.ErrFrameTooLarge) || !errors.As(err, &fe) {
		t.Fatalf("err = %v, want a FrameError matching ErrFrameTooLarge", err)
	}
	if fe.Size <= 1000 || fe.Limit != 1000 || len(fe.Quote) != 64 {
		t.Errorf("FrameError{Size:%d Limit:%d len(Quote):%d}, want over 1000, 1000, 64", fe.Size, fe.Limit, len(fe.Quote))
	}
}

// endless is a peer that sends one line that never ends.
type endless struct{ io.Writer }

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func (endless) Close() error { return nil }

// TestStreamEndlessLine pins issue 13 item 3: a line with no newline is
// reported once it crosses the cap, not read on for ever.
func TestStreamEndlessLine(t *testing.T) {
	s := wire.NewStream(endless{io.Discard}, 1<<20)
	_, err := s.ReadFrame()
	var fe *tproxy.FrameError
	if !errors.As(err, &fe) || !errors.Is(err, tproxy.ErrFrameTooLarge) || fe.Size <= 1<<20 || fe.Size > 2<<20 {
		t.Fatalf("err = %v, want a FrameError for a frame just over the 1 MiB cap", err)
	}
}

// TestStreamBuffersShrink pins issue 13 item 8: after one huge frame each
// way, an idle stream does not keep buffers of its size.
func TestStreamBuffersShrink(t *testing.T) {
	big := `{"jsonrpc":"2.0","method":"event","params":{"name":"big","timestamp":"2026-12-06T16:21:28Z","data":{"x":"` + strings.Repeat("x", 4<<20) + `"}}}`
	in := &chunks{data: []byte(big + "\n" + `{"jsonrpc":"2.0","method":"x"}` + "\n")}
	s := wire.NewStream(in, 0)
	for range 2 {
		if _, err := s.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WriteFrame([]byte(big)); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteNotification("event", tproxy.Event{Name: "big", Data: map[string]any{"x": strings.Repeat("y", 4<<20)}}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteObject(json.RawMessage(big)); err != nil {
		t.Fatal(err)
	}
	if n := wire.RetainedBuffers(s); n > 256<<10 {
		t.Errorf("the stream keeps %d bytes of buffers after its huge frames, want at most 256 KiB", n)
	}
}

// probe stands for jsonrpc2's message type: it refuses JSON that is neither
// a request nor a response.
type probe struct{ jsonrpc2.Request }

func TestStreamReadObjectErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"shell banner", "Welcome to the sandbox!\n", `read frame: invalid JSON: invalid character 'W' looking for beginning of value; starts "Welcome to the sandbox!"`},
		{"invalid utf-8", "{\"a\":\"\xff\xfe\"}\n", `read frame: invalid UTF-8; starts "{\"a\":\"\xff\xfe\"}"`},
		{"batch", "[{\"jsonrpc\":\"2.0\",\"method\":\"x\"}]\n", "read frame: JSON-RPC batches are not supported"},
		{"not json-rpc", "{\"hello\":\"world\"}\n", `read frame: not a JSON-RPC 2.0 message`},
		{"long line quoted to 64 bytes", "nope " + strings.Repeat("é", 100) + "\n", `"...`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := wire.NewStream(&chunks{data: []byte(tt.in)}, 0)
			var m struct {
				Method *string `json:"method"`
			}
			err := s.ReadObject(&m)
			if tt.name == "not json-rpc" {
				// Plain structs accept any object; jsonrpc2's own message
				// type is what refuses it, through the same path.
				err = wire.DecodeFrame([]byte(strings.TrimSpace(tt.in)), new(anyMessage))
			}
			var fe *tproxy.FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a *FrameError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

// anyMessage decodes like jsonrpc2's unexported message type, through a
// real jsonrpc2 connection's expectations: a request needs a method, a
// response a result or an error.
type anyMessage struct{}

func (*anyMessage) UnmarshalJSON(b []byte) error {
	return errors.New("jsonrpc2: unable to determine message type (request or response)")
}

func TestStreamWriteObject(t *testing.T) {
	c := &chunks{}
	s := wire.NewStream(c, 64)
	if err := s.WriteObject(map[string]string{"html": "<a&b>"}); err != nil {
		t.Fatal(err)
	}
	if got, want := c.w.String(), "{\"html\":\"<a&b>\"}\n"; got != want {
		t.Errorf("wrote %q, want %q (one line, HTML not escaped)", got, want)
	}
	c.w.Reset()
	err := s.WriteObject(map[string]string{"big": strings.Repeat("b", 100)})
	if !errors.Is(err, tproxy.ErrFrameTooLarge) || !strings.Contains(err.Error(), "write frame: frame too large (110 bytes, cap 64)") {
		t.Errorf("err = %v, want a write-side ErrFrameTooLarge naming size and cap", err)
	}
	if c.w.Len() != 0 {
		t.Errorf("an oversize frame wrote %d bytes, want none", c.w.Len())
	}
	if err := s.WriteFrame([]byte(`{"x":1}`)); err != nil || c.w.String() != "{\"x\":1}\n" {
		t.Errorf("WriteFrame wrote %q, %v", c.w.String(), err)
	}
}

// TestStreamOverJSONRPC2 runs a real jsonrpc2 connection pair over Streams.
func TestStreamOverJSONRPC2(t *testing.T) {
	a, b := pipePair()
	ctx := t.Context()
	srv := jsonrpc2.NewConn(ctx, wire.NewStream(b, 0), jsonrpc2.HandlerWithError(
		func(ctx context.Context, c *jsonrpc2.Conn, r *jsonrpc2.Request) (any, error) {
			return map[string]string{"method": r.Method}, nil
		}))
	defer srv.Close()
	cli := jsonrpc2.NewConn(ctx, wire.NewStream(a, 0), nil)
	defer cli.Close()
	var got map[string]string
	if err := cli.Call(ctx, "héllo", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got["method"] != "héllo" {
		t.Errorf("got %v", got)
	}
}

// TestStreamOversizeFrameMemoryIsBounded: skipping a 100 MiB frame over a
// 1 MiB cap allocates in proportion to the cap (the longest line it must hold), not
// the frame.
func TestStreamOversizeFrameMemoryIsBounded(t *testing.T) {
	const frame, capBytes = 100 << 20, 1 << 20
	r := io.MultiReader(strings.NewReader(`{"jsonrpc":"2.0","method":"x","params":"`),
		io.LimitReader(repeatReader('a'), frame), strings.NewReader("\"}\n{\"jsonrpc\":\"2.0\",\"method\":\"next\"}\n"))
	s := wire.NewStream(readOnly{r}, capBytes)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := s.ReadFrame()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, tproxy.ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*capBytes {
		t.Errorf("skipping a %d MiB frame allocated %d KiB, more than 8× the %d KiB cap", frame>>20, alloc>>10, capBytes>>10)
	}
	next, err := s.ReadFrame()
	if err != nil || !strings.Contains(string(next), `"next"`) {
		t.Errorf("the frame after the oversize one: %q, %v", next, err)
	}
}

type repeatReader byte

func (b repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

type readOnly struct{ io.Reader }

func (readOnly) Write(p []byte) (int, error) { return 0, io.ErrClosedPipe }
func (readOnly) Close() error                { return nil }

// TestStreamOneBigMessageAtATime: big messages (a prepare with a long
// manifest), each arriving on its own, are each reassembled whole.
func TestStreamOneBigMessageAtATime(t *testing.T) {
	line := `{"pad":"` + strings.Repeat("p", 20000) + `"}` + "\n"
	s := wire.NewStream(&chunks{data: []byte(strings.Repeat(line, 10)), sizes: []int{len(line)}}, 0)
	for i := range 10 {
		f, err := s.ReadFrame()
		if err != nil || string(f)+"\n" != line {
			t.Fatalf("frame %d: %d bytes, %v", i, len(f), err)
		}
	}
	if _, err := s.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}
