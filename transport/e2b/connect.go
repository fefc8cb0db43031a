package e2b

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Envelope flags of the Connect streaming protocol.
const (
	// flagCompressed marks an envelope whose payload is compressed with the
	// stream's negotiated encoding (gzip here).
	flagCompressed byte = 0x01
	// flagEndStream marks the last envelope of a response stream; its
	// payload is the end-of-stream JSON, {} or {"error":{...}}.
	flagEndStream byte = 0x02
)

// maxEnvelope caps one envelope's payload. envd sends data in chunks of
// at most 32 KiB (about 43 KiB once base64-encoded in JSON); the cap only
// protects memory from a broken or hostile peer.
const maxEnvelope = 4 << 20

// ErrEnvelopeTooLarge is matched by errors.Is for an envelope over the cap.
var ErrEnvelopeTooLarge = errors.New("e2b: connect envelope too large")

// appendEnvelope appends one Connect envelope (flag byte, 4-byte
// big-endian length, payload) to dst.
func appendEnvelope(dst []byte, flags byte, payload []byte) []byte {
	dst = append(dst, flags, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(dst[len(dst)-4:], uint32(len(payload)))
	return append(dst, payload...)
}

// envelopeReader reads Connect envelopes from a stream.
type envelopeReader struct {
	r *bufio.Reader
	// gzip is set when the response's Connect-Content-Encoding is gzip.
	gzip bool
	hdr  [5]byte
	buf  []byte
}

// newEnvelopeReader returns a reader of the envelopes in r. If gzipped is
// true, envelopes flagged flagCompressed are gunzipped; otherwise such an
// envelope is an error.
func newEnvelopeReader(r io.Reader, gzipped bool) *envelopeReader {
	return &envelopeReader{r: bufio.NewReaderSize(r, 64<<10), gzip: gzipped}
}

// Next returns the next envelope's flags and payload. The payload is valid
// until the next call. At a clean end of input before any byte of an
// envelope it returns io.EOF; a truncated envelope is io.ErrUnexpectedEOF.
func (e *envelopeReader) Next() (flags byte, payload []byte, err error) {
	if _, err := io.ReadFull(e.r, e.hdr[:]); err != nil {
		return 0, nil, err
	}
	flags = e.hdr[0]
	n := binary.BigEndian.Uint32(e.hdr[1:])
	if n > maxEnvelope {
		return flags, nil, fmt.Errorf("%w: %d bytes, cap %d", ErrEnvelopeTooLarge, n, maxEnvelope)
	}
	if cap(e.buf) < int(n) {
		e.buf = make([]byte, n)
	}
	e.buf = e.buf[:n]
	if _, err := io.ReadFull(e.r, e.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return flags, nil, err
	}
	payload = e.buf
	if flags&flagCompressed != 0 {
		if !e.gzip {
			return flags, nil, errors.New("e2b: compressed envelope on a stream without an encoding")
		}
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return flags, nil, fmt.Errorf("e2b: gunzip envelope: %w", err)
		}
		payload, err = io.ReadAll(io.LimitReader(zr, maxEnvelope+1))
		if err != nil {
			return flags, nil, fmt.Errorf("e2b: gunzip envelope: %w", err)
		}
		if len(payload) > maxEnvelope {
			return flags, nil, fmt.Errorf("%w: more than %d bytes once gunzipped", ErrEnvelopeTooLarge, maxEnvelope)
		}
	}
	return flags, payload, nil
}

// ConnectError is an error in the Connect protocol's form: the body of a
// failed unary call, or the error of an end-of-stream envelope.
type ConnectError struct {
	// Code is the Connect error code, such as "deadline_exceeded" or
	// "not_found".
	Code string `json:"code"`
	// Message is the server's message.
	Message string `json:"message"`
}

// Error names the code and quotes the message.
func (e *ConnectError) Error() string {
	if e.Message == "" {
		return "e2b: envd: " + e.Code
	}
	return fmt.Sprintf("e2b: envd: %s: %s", e.Code, e.Message)
}

// parseEndStream decodes the payload of an end-of-stream envelope: nil for
// a clean end, a *ConnectError for an error end.
func parseEndStream(payload []byte) error {
	var end struct {
		Error *ConnectError `json:"error"`
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		return nil
	}
	if err := json.Unmarshal(payload, &end); err != nil {
		return fmt.Errorf("e2b: malformed end-of-stream envelope %q: %w", truncate(payload, 100), err)
	}
	if end.Error != nil {
		return end.Error
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

func newBytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
