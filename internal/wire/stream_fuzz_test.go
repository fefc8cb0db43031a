package wire_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/internal/wire"
)

// referenceFrames is the framing rule written the obvious way: split on
// newlines, refuse lines over the cap (blank or not: the cap is on bytes),
// drop one trailing CR, skip blank lines, and refuse an unterminated tail
// that is over the cap or not blank.
func referenceFrames(data []byte, maxFrame int) (frames []string, errs int) {
	parts := bytes.Split(data, []byte("\n"))
	tail := parts[len(parts)-1]
	for _, l := range parts[:len(parts)-1] {
		if len(l) > maxFrame {
			errs++
			continue
		}
		l = bytes.TrimRight(l, "\r")
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		frames = append(frames, string(l))
	}
	if len(tail) > maxFrame || len(bytes.TrimSpace(tail)) > 0 {
		errs++
	}
	return frames, errs
}

// FuzzStream feeds arbitrary bytes in arbitrary chunks through a small
// buffer and cap, and checks the frames against referenceFrames.
func FuzzStream(f *testing.F) {
	f.Add([]byte("{\"a\":1}\n{\"b\":2}\n"), uint8(3), uint8(20), uint8(0))
	f.Add([]byte("héllo→世界\r\n\n  \nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\nend"), uint8(1), uint8(10), uint8(4))
	f.Add([]byte("\n\n\r\n"), uint8(2), uint8(0), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk, maxFrame, buf uint8) {
		limit := 1 + int(maxFrame)%64
		s := wire.NewStreamBuffered(&chunks{data: bytes.Clone(data), sizes: []int{1 + int(chunk)%17, 1}}, limit, 16+int(buf)%32)
		var frames []string
		errs := 0
		for {
			fr, err := s.ReadFrame()
			if err == io.EOF {
				break
			}
			if err != nil {
				var fe *tproxy.FrameError
				if !errors.As(err, &fe) {
					t.Fatalf("error %v is not a FrameError", err)
				}
				errs++
				if errors.Is(err, io.ErrUnexpectedEOF) {
					break
				}
				continue
			}
			if len(fr) > limit || bytes.IndexByte(fr, '\n') >= 0 {
				t.Fatalf("frame %q breaks the cap %d or holds a newline", fr, limit)
			}
			frames = append(frames, string(fr))
		}
		wantFrames, wantErrs := referenceFrames(data, limit)
		if diff := cmp.Diff(wantFrames, frames); diff != "" {
			t.Fatalf("frames (-want +got):\n%s", diff)
		}
		if errs != wantErrs {
			t.Fatalf("%d errors, want %d", errs, wantErrs)
		}
	})
}

// FuzzDecodeFrame checks that any bytes decode to a value or a FrameError,
// never a panic or another error type.
func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
	f.Add([]byte("[1]"))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) == 0 {
			return
		}
		var m probe
		err := wire.DecodeFrame(frame, &m)
		var fe *tproxy.FrameError
		if err != nil && !errors.As(err, &fe) {
			t.Fatalf("error %v is not a FrameError", err)
		}
		if err != nil && len(fe.Quote) > 64 {
			t.Fatalf("quote of %d bytes", len(fe.Quote))
		}
	})
}
