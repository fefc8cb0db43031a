package logsink

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// ReadLines reads a JSONL file such as events.jsonl, one object per line,
// numbers kept as json.Number so that seq and values come back exact. Blank
// lines are skipped. An error names the file and the line number
// ("logsink: /dir/events.jsonl:3: …").
func ReadLines(path string) ([]map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("logsink: %w", err)
	}
	defer f.Close()
	var out []map[string]any
	r := bufio.NewReader(f)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return out, fmt.Errorf("logsink: %s:%d: %w", path, n, err)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			m, derr := decodeLine(line)
			if derr != nil {
				return out, fmt.Errorf("logsink: %s:%d: %w", path, n, derr)
			}
			out = append(out, m)
		}
		if err == io.EOF {
			return out, nil
		}
	}
}

func decodeLine(line []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return m, nil
}
