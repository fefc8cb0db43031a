package wiretest_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tproxy/tproxy/internal/wiretest"
)

// example is one frame of docs/protocol.md section 14.
type example struct {
	line     int    // in protocol.md
	title    string // the paragraph before its code block
	fromHost bool
	frame    string
}

// examples extracts the frames of section 14: the lines of its code
// blocks that start with an arrow.
func examples(t *testing.T) []example {
	t.Helper()
	dir, err := wiretest.SchemaDir()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "..", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []example
	var in14, fenced bool
	title := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in14 = strings.HasPrefix(line, "## 14.")
		case !in14:
		case strings.HasPrefix(line, "```"):
			fenced = !fenced
		case fenced && strings.HasPrefix(line, "→ "):
			out = append(out, example{n, title, true, strings.TrimPrefix(line, "→ ")})
		case fenced && strings.HasPrefix(line, "← "):
			out = append(out, example{n, title, false, strings.TrimPrefix(line, "← ")})
		case !fenced && strings.TrimSpace(line) != "":
			title = line
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 20 {
		t.Fatalf("found %d example frames in section 14 of protocol.md; the extraction is broken", len(out))
	}
	return out
}

// TestProtocolExamples validates every example frame of docs/protocol.md
// section 14: the host's against host-to-worker.schema.json, the
// worker's against worker-to-host.schema.json and the response schema of
// the request with the same id. The host's frames under "Bad input" are
// wrong on purpose and are not validated; the worker's answers to them
// are.
func TestProtocolExamples(t *testing.T) {
	methods := map[string]string{} // IDKey → method, over the whole section: its ids are distinct
	for _, ex := range examples(t) {
		badInput := strings.HasPrefix(ex.title, "Bad input")
		if ex.fromHost {
			if badInput {
				continue
			}
			if err := wiretest.ValidateHostFrame([]byte(ex.frame)); err != nil {
				t.Errorf("protocol.md:%d (%s): host frame does not validate: %v\n%s", ex.line, ex.title, err, ex.frame)
			}
			if key, method, ok := wiretest.RequestOf([]byte(ex.frame)); ok {
				methods[key] = method
			}
			continue
		}
		responseTo := ""
		err := wiretest.ValidateWorkerFrame([]byte(ex.frame), func(key string) string {
			responseTo = methods[key]
			return responseTo
		})
		if err != nil {
			t.Errorf("protocol.md:%d (%s): worker frame does not validate: %v\n%s", ex.line, ex.title, err, ex.frame)
		}
		if strings.Contains(ex.frame, `"result"`) && responseTo == "" {
			t.Errorf("protocol.md:%d: a result to no request of the examples: %s", ex.line, ex.frame)
		}
	}
}

// TestSchemasAccept: frames the document allows, in forms the examples do
// not show.
func TestSchemasAccept(t *testing.T) {
	host := []string{
		`{"jsonrpc":"2.0","id":1,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping","params":{}}`,
		`{"jsonrpc":"2.0","id":1.0,"method":"ping","params":{"protocol":1.0,"future":true}}`, // integers in any notation, unknown members
		`{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[]},"config":null,"log_level":"DEBUG","secrets":{"keys":["dsn"],"pointers":["","/a/b~1c/~0"]}}}`,
		`{"jsonrpc":"2.0","id":3,"method":"exec_step","params":{"step_id":"a","driver":"d","inputs":null}}`,
		`{"jsonrpc":"2.0","id":4,"method":"cleanup"}`,
		`{"jsonrpc":"2.0","id":5,"method":"fetch_artifact","params":{"step_id":"a","path":"x/y.txt","offset":0,"length":0}}`,
		`{"jsonrpc":"2.0","id":6,"method":"custom","params":{"anything":[1]}}`,
		`{"jsonrpc":"2.0","id":"a string id","method":"ping"}`, // a host's ids are strings or integers (section 3)
		`{"jsonrpc":"2.0","id":0,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":9007199254740991,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"d","timeout":"1m30s","retry":{"attempts":3,"backoff":"1.5s","on":["transient","timeout"]}},{"id":"b","driver":"d","timeout":null,"retry":{"attempts":0}},{"id":"c","driver":"d","timeout":"0","retry":null},{"id":"e","driver":"d","timeout":"250ms","retry":{"backoff":"1h2m3.5s","on":null}},{"id":"f","driver":"d","timeout":"10µs"}]}}}`,
		`{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":"a string id"}}`,
		`{"jsonrpc":"2.0","id":"w-1","error":{"code":-32601,"message":"the host serves no methods"}}`, // a worker's request refused (section 12)
		`{"jsonrpc":"2.0","id":7,"method":"ping","params":{"data":"x"}}` + "\r",                       // the tap trims line endings; the schema sees JSON white space
	}
	for _, f := range host {
		if err := wiretest.ValidateHostFrame([]byte(f)); err != nil {
			t.Errorf("host frame refused: %s\n%v", f, err)
		}
	}
	methods := map[string]string{"n:1": "ping", "n:2": "prepare", "n:3": "exec_step", "n:4": "cleanup", "n:5": "fetch_artifact"}
	methodOf := func(key string) string { return methods[key] }
	worker := []string{
		`{"jsonrpc":"2.0","id":1,"result":{"status":"pong","echo":"","timestamp":"2026-12-06T17:21:28+01:00","protocol":1,"worker":{"name":"w","version":"1","drivers":[]}}}`,
		`{"jsonrpc":"2.0","id":2,"result":{"status":"ready","session_id":"s","session_dir":null,"drivers_loaded":null}}`,
		`{"jsonrpc":"2.0","id":3,"result":{"status":"complete","step_id":"a","duration_ms":0.5,"rows_processed":3.0,"outputs":{"x":null}}}`,
		`{"jsonrpc":"2.0","id":3,"error":{"code":-32004,"message":"m","data":{"step_id":"a","error_type":"panic","message":"m","artifacts":[{"path":"a/b","size":0,"sha256":"C122CB585DB67845F17DFCA39B90CFAF2BEF7725E0F801ECEB1369D84116CEBB"}]}}}`,
		`{"jsonrpc":"2.0","id":4,"result":{"status":"cleaned","session_id":"s","steps_executed":0}}`,
		`{"jsonrpc":"2.0","id":5,"result":{"data":"","eof":true}}`,
		`{"jsonrpc":"2.0","id":5,"result":{"data":"YQ==","eof":false}}`,
		`{"jsonrpc":"2.0","id":2,"error":{"code":-32006,"message":"m","data":{"step_id":"a","field":"source.columns[2].name","message":"m"}}}`,
		`{"jsonrpc":"2.0","id":2,"error":{"code":-32006,"message":"m","data":{"step_id":"a","field":null,"message":"m"}}}`, // the config as a whole
		`{"jsonrpc":"2.0","id":3,"error":{"code":-32800,"message":"m"}}`,
		`{"jsonrpc":"2.0","id":3,"error":{"code":-32800,"message":"m","data":null}}`,
		`{"jsonrpc":"2.0","id":3,"error":{"code":-32800,"message":"m","data":{"step_id":"a","error_type":"cancelled","message":"m","artifacts":[]}}}`,
		`{"jsonrpc":"2.0","id":3,"error":{"code":-32004,"message":"m","data":{"step_id":"a","error_type":"missing_table","message":"m"}}}`, // a name the driver chose
		`{"jsonrpc":"2.0","id":"x","error":{"code":-32600,"message":"invalid request"}}`,
		`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request"}}`,
		`{"jsonrpc":"2.0","id":8,"result":null}`, // a method of the worker's own: any result
		`{"jsonrpc":"2.0","method":"event","params":{"name":"e","timestamp":"2026-12-06T16:21:28.123456789Z","step_id":null,"data":null}}`,
		`{"jsonrpc":"2.0","method":"metric","params":{"name":"m","value":-1.5e3,"timestamp":"2026-12-06T16:21:28Z","tags":{"a":"b"}}}`,
		`{"jsonrpc":"2.0","method":"log","params":{"level":"warn","message":"","timestamp":"2026-12-06T16:21:28-05:30"}}`,
		`{"jsonrpc":"2.0","method":"heartbeat","params":{"timestamp":"2026-12-06T16:21:28Z","future":1}}`,
	}
	for _, f := range worker {
		if err := wiretest.ValidateWorkerFrame([]byte(f), methodOf); err != nil {
			t.Errorf("worker frame refused: %s\n%v", f, err)
		}
	}
}

// TestSchemasRefuse: frames the document forbids, one rule each, so that
// a schema that accepts everything cannot pass.
func TestSchemasRefuse(t *testing.T) {
	host := map[string]string{
		"not JSON":                 `this is not json`,
		"an array":                 `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
		"jsonrpc 1.0":              `{"jsonrpc":"1.0","id":1,"method":"ping"}`,
		"a negative id":            `{"jsonrpc":"2.0","id":-1,"method":"ping"}`,
		"an id over 2^53-1":        `{"jsonrpc":"2.0","id":9007199254740992,"method":"ping"}`,
		"a fractional id":          `{"jsonrpc":"2.0","id":1.5,"method":"ping"}`,
		"an object id":             `{"jsonrpc":"2.0","id":{"n":1},"method":"ping"}`,
		"a timeout in seconds":     `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"d","timeout":90}]}}}`,
		"a timeout in words":       `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"d","timeout":"90 seconds"}]}}}`,
		"a timeout without unit":   `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"d","timeout":"90"}]}}}`,
		"retry not an object":      `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"d","retry":3}]}}}`,
		"fractional attempts":      `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"d","retry":{"attempts":1.5}}]}}}`,
		"a bad backoff":            `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"d","retry":{"backoff":"1 s"}}]}}}`,
		"retry on not strings":     `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a","driver":"d","retry":{"on":[1]}}]}}}`,
		"params not an object":     `{"jsonrpc":"2.0","id":1,"method":"ping","params":["x"]}`,
		"protocol not an integer":  `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"protocol":1.5}}`,
		"prepare without params":   `{"jsonrpc":"2.0","id":2,"method":"prepare"}`,
		"prepare without manifest": `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s"}}`,
		"steps null":               `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":null}}}`,
		"a bad session id":         `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"../s","manifest":{"steps":[]}}}`,
		"a session id too long":    `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"` + strings.Repeat("s", 129) + `","manifest":{"steps":[]}}}`,
		"a step without driver":    `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[{"id":"a"}]}}}`,
		"a bad log level":          `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[]},"log_level":"verbose"}}`,
		"a bad pointer":            `{"jsonrpc":"2.0","id":2,"method":"prepare","params":{"session_id":"s","manifest":{"steps":[]},"secrets":{"pointers":["a/b"]}}}`,
		"an input without key":     `{"jsonrpc":"2.0","id":3,"method":"exec_step","params":{"step_id":"a","driver":"d","inputs":{"in":{"from_step":"b"}}}}`,
		"exec_step without driver": `{"jsonrpc":"2.0","id":3,"method":"exec_step","params":{"step_id":"a"}}`,
		"a negative offset":        `{"jsonrpc":"2.0","id":5,"method":"fetch_artifact","params":{"step_id":"a","path":"x","offset":-1,"length":0}}`,
		"fetch without length":     `{"jsonrpc":"2.0","id":5,"method":"fetch_artifact","params":{"step_id":"a","path":"x","offset":0}}`,
		"cancel without id":        `{"jsonrpc":"2.0","method":"$/cancelRequest","params":{}}`,
		"cancel with a null id":    `{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":null}}`,
		"another notification":     `{"jsonrpc":"2.0","method":"event","params":{"name":"e","timestamp":"2026-12-06T16:21:28Z"}}`,
		"a $/ request":             `{"jsonrpc":"2.0","id":1,"method":"$/mine"}`,
		"a response":               `{"jsonrpc":"2.0","id":1,"result":{}}`,
		"an error but -32601":      `{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"m"}}`,
		"no method":                `{"jsonrpc":"2.0","id":1}`,
		"a raw invalid UTF-8 byte": "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"data\":\"\xff\"}}",
		"trailing bytes":           `{"jsonrpc":"2.0","id":1,"method":"ping"} {}`,
	}
	for name, f := range host {
		if err := wiretest.ValidateHostFrame([]byte(f)); err == nil {
			t.Errorf("host frame accepted, %s: %s", name, f)
		}
	}
	methods := map[string]string{"n:1": "ping", "n:2": "prepare", "n:3": "exec_step", "n:4": "cleanup", "n:5": "fetch_artifact"}
	methodOf := func(key string) string { return methods[key] }
	const ts = `"timestamp":"2026-12-06T16:21:28Z"`
	worker := map[string]string{
		"a request":                     `{"jsonrpc":"2.0","id":1,"method":"ping"}`,
		"an unknown notification":       `{"jsonrpc":"2.0","method":"progress","params":{}}`,
		"a notification without params": `{"jsonrpc":"2.0","method":"heartbeat"}`,
		"result and error":              `{"jsonrpc":"2.0","id":9,"result":{},"error":{"code":1,"message":"m"}}`,
		"neither result nor error":      `{"jsonrpc":"2.0","id":9}`,
		"a result to id null":           `{"jsonrpc":"2.0","id":null,"result":{}}`,
		"a parse error with an id":      `{"jsonrpc":"2.0","id":9,"error":{"code":-32700,"message":"parse error"}}`,
		"an error without message":      `{"jsonrpc":"2.0","id":9,"error":{"code":-32601}}`,
		"a fractional code":             `{"jsonrpc":"2.0","id":9,"error":{"code":-32601.5,"message":"m"}}`,
		"a step failure without data":   `{"jsonrpc":"2.0","id":3,"error":{"code":-32004,"message":"m"}}`,
		"a step failure without type":   `{"jsonrpc":"2.0","id":3,"error":{"code":-32004,"message":"m","data":{"step_id":"a","message":"m"}}}`,
		"invalid config without data":   `{"jsonrpc":"2.0","id":2,"error":{"code":-32006,"message":"m"}}`,
		"invalid config without step":   `{"jsonrpc":"2.0","id":2,"error":{"code":-32006,"message":"m","data":{"field":"f","message":"m"}}}`,
		"invalid config without reason": `{"jsonrpc":"2.0","id":2,"error":{"code":-32006,"message":"m","data":{"step_id":"a","field":"f"}}}`,
		"a field not a string":          `{"jsonrpc":"2.0","id":2,"error":{"code":-32006,"message":"m","data":{"step_id":"a","field":["f"],"message":"m"}}}`,
		"cancelled, another type":       `{"jsonrpc":"2.0","id":3,"error":{"code":-32800,"message":"m","data":{"step_id":"a","error_type":"driver","message":"m"}}}`,
		"cancelled, data not a failure": `{"jsonrpc":"2.0","id":3,"error":{"code":-32800,"message":"m","data":"cancelled"}}`,
		"an event under a host name":    `{"jsonrpc":"2.0","method":"event","params":{"name":"run_complete",` + ts + `}}`,
		"a worker's step_retry":         `{"jsonrpc":"2.0","method":"event","params":{"name":"step_retry",` + ts + `,"step_id":"a"}}`,
		"an event without timestamp":    `{"jsonrpc":"2.0","method":"event","params":{"name":"e"}}`,
		"an event with an empty name":   `{"jsonrpc":"2.0","method":"event","params":{"name":"",` + ts + `}}`,
		"an epoch timestamp":            `{"jsonrpc":"2.0","method":"heartbeat","params":{"timestamp":1765038088}}`,
		"a timestamp without offset":    `{"jsonrpc":"2.0","method":"heartbeat","params":{"timestamp":"2026-12-06T16:21:28"}}`,
		"a date only":                   `{"jsonrpc":"2.0","method":"heartbeat","params":{"timestamp":"2026-12-06"}}`,
		"month 13":                      `{"jsonrpc":"2.0","method":"heartbeat","params":{"timestamp":"2026-13-06T16:21:28Z"}}`,
		"a bad step id":                 `{"jsonrpc":"2.0","method":"heartbeat","params":{` + ts + `,"step_id":"a/b"}}`,
		"a metric value string":         `{"jsonrpc":"2.0","method":"metric","params":{"name":"m","value":"1",` + ts + `}}`,
		"a tag not a string":            `{"jsonrpc":"2.0","method":"metric","params":{"name":"m","value":1,` + ts + `,"tags":{"a":1}}}`,
		"a log level trace":             `{"jsonrpc":"2.0","method":"log","params":{"level":"TRACE","message":"m",` + ts + `}}`,
		"ping without worker":           `{"jsonrpc":"2.0","id":1,"result":{"status":"pong","echo":"",` + ts + `,"protocol":1}}`,
		"ping drivers null":             `{"jsonrpc":"2.0","id":1,"result":{"status":"pong","echo":"",` + ts + `,"protocol":1,"worker":{"name":"w","version":"1","drivers":null}}}`,
		"ping status ok":                `{"jsonrpc":"2.0","id":1,"result":{"status":"ok","echo":"",` + ts + `,"protocol":1,"worker":{"name":"w","version":"1","drivers":[]}}}`,
		"prepare without session_id":    `{"jsonrpc":"2.0","id":2,"result":{"status":"ready"}}`,
		"exec without duration":         `{"jsonrpc":"2.0","id":3,"result":{"status":"complete","step_id":"a"}}`,
		"negative rows":                 `{"jsonrpc":"2.0","id":3,"result":{"status":"complete","step_id":"a","duration_ms":1,"rows_processed":-1}}`,
		"fractional rows":               `{"jsonrpc":"2.0","id":3,"result":{"status":"complete","step_id":"a","duration_ms":1,"rows_processed":1.5}}`,
		"an artifact path with ..":      `{"jsonrpc":"2.0","id":3,"result":{"status":"complete","step_id":"a","duration_ms":1,"artifacts":[{"path":"a/../b","size":1,"sha256":"c122cb585db67845f17dfca39b90cfaf2bef7725e0f801eceb1369d84116cebb"}]}}`,
		"an absolute artifact path":     `{"jsonrpc":"2.0","id":3,"result":{"status":"complete","step_id":"a","duration_ms":1,"artifacts":[{"path":"/b","size":1,"sha256":"c122cb585db67845f17dfca39b90cfaf2bef7725e0f801eceb1369d84116cebb"}]}}`,
		"an artifact path with a \\":    `{"jsonrpc":"2.0","id":3,"result":{"status":"complete","step_id":"a","duration_ms":1,"artifacts":[{"path":"a\\b","size":1,"sha256":"c122cb585db67845f17dfca39b90cfaf2bef7725e0f801eceb1369d84116cebb"}]}}`,
		"an empty path element":         `{"jsonrpc":"2.0","id":3,"result":{"status":"complete","step_id":"a","duration_ms":1,"artifacts":[{"path":"a//b","size":1,"sha256":"c122cb585db67845f17dfca39b90cfaf2bef7725e0f801eceb1369d84116cebb"}]}}`,
		"a short sha256":                `{"jsonrpc":"2.0","id":3,"result":{"status":"complete","step_id":"a","duration_ms":1,"artifacts":[{"path":"b","size":1,"sha256":"c122"}]}}`,
		"cleanup without steps":         `{"jsonrpc":"2.0","id":4,"result":{"status":"cleaned","session_id":"s"}}`,
		"fetch data not base64":         `{"jsonrpc":"2.0","id":5,"result":{"data":"a b","eof":true}}`,
		"fetch data unpadded":           `{"jsonrpc":"2.0","id":5,"result":{"data":"YQ","eof":true}}`,
		"fetch without eof":             `{"jsonrpc":"2.0","id":5,"result":{"data":""}}`,
	}
	for name, f := range worker {
		if err := wiretest.ValidateWorkerFrame([]byte(f), methodOf); err == nil {
			t.Errorf("worker frame accepted, %s: %s", name, f)
		}
	}
}
