package host_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/logsink"
	"github.com/tproxy/tproxy/transport"
)

// exchange is one request of docs/protocol.md's examples and what the
// worker sends for it: before, then (after the host's notification wait,
// if any) after.
type exchange struct {
	request map[string]any
	before  []string
	wait    string // a host notification expected before after, e.g. $/cancelRequest
	after   []string
}

// docExchanges reads the examples of docs/protocol.md section 14: every
// request the host sends there, by method and step, with the worker's
// frames that answer it.
func docExchanges(t *testing.T) map[string]*exchange {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, examples, ok := strings.Cut(string(doc), "## 14. Examples")
	if !ok {
		t.Fatal("docs/protocol.md has no section 14. Examples")
	}
	examples, _, _ = strings.Cut(examples, "\n## ")
	out := map[string]*exchange{}
	var cur *exchange
	for line := range strings.Lines(examples) {
		line = strings.TrimSuffix(line, "\n")
		host, fromHost := strings.CutPrefix(line, "→ ")
		worker, fromWorker := strings.CutPrefix(line, "← ")
		switch {
		case fromHost:
			var req map[string]any
			if json.Unmarshal([]byte(host), &req) != nil || req["jsonrpc"] != "2.0" {
				cur = nil // the bad-input example: not something a host sends
				continue
			}
			if _, isCall := req["id"]; !isCall && cur != nil {
				cur.wait = host
				continue
			}
			cur = &exchange{request: req}
			out[exchangeKey(req)] = cur
		case fromWorker && cur != nil && cur.wait == "":
			cur.before = append(cur.before, worker)
		case fromWorker && cur != nil:
			cur.after = append(cur.after, worker)
		}
	}
	if len(out) < 8 {
		t.Fatalf("found %d example exchanges in docs/protocol.md, want the 9 of section 14", len(out))
	}
	return out
}

// exchangeKey names a request by its method and, for steps, the step;
// for prepare, the session: the examples prepare two.
func exchangeKey(req map[string]any) string {
	key, _ := req["method"].(string)
	if p, ok := req["params"].(map[string]any); ok {
		if id, ok := p["step_id"].(string); ok {
			key += " " + id
		}
		if id, ok := p["session_id"].(string); ok {
			key += " " + id
		}
	}
	return key
}

// docSession is the session of the examples' successful prepare, the one
// the examples' steps run in.
const docSession = "run-42"

var docID = regexp.MustCompile(`"id":\d+`)

// docWorker is a worker that answers the host's requests with the frames
// of docs/protocol.md's examples, passed through vary (a leniency variant),
// with the response's id set to the request's. The host's frames are
// checked against docs/schema by the tap.
func docWorker(t *testing.T, ex map[string]*exchange, vary func(string) string) *transport.InMemory {
	return &transport.InMemory{CloseTimeout: time.Second, Serve: wiretest.Serve(t, func(ctx context.Context, rw io.ReadWriteCloser) error {
		defer rw.Close()
		lines := bufio.NewScanner(rw)
		lines.Buffer(nil, 1<<20)
		send := func(frames []string, id string) {
			for _, f := range frames {
				if strings.Contains(f, `"result"`) || strings.Contains(f, `"error"`) {
					f = docID.ReplaceAllString(f, `"id":`+id)
				}
				io.WriteString(rw, vary(f)+"\n")
			}
		}
		for lines.Scan() {
			var req map[string]any
			if err := json.Unmarshal(lines.Bytes(), &req); err != nil {
				t.Errorf("the host sent %q: %v", lines.Bytes(), err)
				return nil
			}
			idJSON, _ := json.Marshal(req["id"])
			e := ex[exchangeKey(req)]
			if e == nil {
				t.Errorf("the host sent a request the examples do not answer: %s", lines.Bytes())
				return nil
			}
			switch req["method"] {
			case tproxy.MethodPing:
				checkSameFrame(t, lines.Bytes(), e.request)
			case tproxy.MethodPrepare:
				checkSameManifest(t, req, e.request)
			}
			send(e.before, string(idJSON))
			if e.wait != "" {
				if !lines.Scan() {
					return nil
				}
				var want map[string]any
				json.Unmarshal([]byte(e.wait), &want)
				want["params"] = map[string]any{"id": req["id"]}
				checkSameFrame(t, lines.Bytes(), want)
				send(e.after, string(idJSON))
			}
		}
		return nil
	}, wiretest.HostFrames)}
}

// checkSameFrame compares a frame the host wrote with the example's,
// ignoring the id.
func checkSameFrame(t *testing.T, got []byte, want map[string]any) {
	t.Helper()
	var g map[string]any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	if _, ok := want["id"]; ok {
		want["id"] = g["id"]
	}
	if d := cmp.Diff(want, g); d != "" {
		t.Errorf("the host's frame differs from docs/protocol.md's (-doc +host):\n%s", d)
	}
}

// checkSameManifest compares the manifest of a prepare the host wrote with
// the example's, when the host sent one of its own steps: a test that
// prepares an empty manifest only needs the example's answer.
func checkSameManifest(t *testing.T, got, want map[string]any) {
	t.Helper()
	g, _ := got["params"].(map[string]any)["manifest"].(map[string]any)
	if steps, _ := g["steps"].([]any); len(steps) == 0 {
		return
	}
	if d := cmp.Diff(want["params"].(map[string]any)["manifest"], g); d != "" {
		t.Errorf("the host's manifest differs from docs/protocol.md's (-doc +host):\n%s", d)
	}
}

// docRun runs the manifest of the examples' prepare of session (and with
// its log level) against docWorker.
func docRun(t *testing.T, ex map[string]*exchange, session string, vary func(string) string) (string, *host.Status, error) {
	t.Helper()
	params := ex[tproxy.MethodPrepare+" "+session].request["params"].(map[string]any)
	b, _ := json.Marshal(params["manifest"])
	var m tproxy.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "session")
	st, err := host.RunManifest(t.Context(), docWorker(t, ex, vary), host.RunSpec{
		SessionID: params["session_id"].(string), Dir: dir, Manifest: m, LogLevel: params["log_level"].(string),
		Options: []host.Option{host.WithLogger(slog.New(slog.DiscardHandler))},
	})
	return dir, st, err
}

// TestContractExamples drives the host with every worker frame of
// docs/protocol.md's examples, then with one variant per leniency rule of
// section 12, and checks that each gives the same complete session
// directory.
func TestContractExamples(t *testing.T) {
	ex := docExchanges(t)
	dir, st, err := docRun(t, ex, docSession, func(s string) string { return s })
	var se *host.StepError
	if !errors.As(err, &se) || se.StepID != "transform" || se.ErrorType != "input" {
		t.Fatalf("err = %v, want the example's failure of step transform (input)", err)
	}
	if st.Outcome != host.OutcomeFailed || st.Failure.Kind != host.FailureStep || st.StepsCompleted != 1 ||
		st.Steps[0].RowsProcessed != 240 || st.Steps[0].DurationMS != 40.5 || st.Steps[1].ErrorType != "input" {
		t.Errorf("status = %+v, failure %+v", st, st.Failure)
	}
	if st.Protocol != (host.ProtocolCounts{}) {
		t.Errorf("protocol counts = %+v, want none", st.Protocol)
	}
	cleaned, err := os.ReadFile(filepath.Join(dir, host.ArtifactsDir, "extract", "cleaned_config.json"))
	if err != nil || string(cleaned) != "{\n  \"password\": \"***MASKED***\",\n  \"path\": \"/data/in.csv\"\n}\n" {
		t.Errorf("the fetched artifact: %q, %v", cleaned, err)
	}
	want := sessionRecords(t, dir)
	for _, rec := range []string{
		"event session_initialized", "metric steps_total", "event step_start extract", "event progress extract",
		"metric rows_read extract", "metric rows_processed extract", "metric step_duration_ms extract",
		"event step_complete extract", "event step_start transform", "event step_failed transform", "event session_cleanup",
	} {
		if !strings.Contains(strings.Join(want, "\n"), rec) {
			t.Errorf("the session lacks %q; it has:\n%s", rec, strings.Join(want, "\n"))
		}
	}

	variants := map[string]func(string) string{
		// Any JSON number for a count or a duration.
		"integral floats": strings.NewReplacer(`"rows_processed":240,`, `"rows_processed":240.0,`,
			`"steps_executed":1,`, `"steps_executed":1e0,`, `"size":59,`, `"size":5.9e1,`, `"protocol":1,`, `"protocol":1.0,`,
			`"duration_ms":40.5,"outputs"`, `"duration_ms":4.05e1,"outputs"`).Replace,
		// Timestamps with and without a fraction, in any offset.
		"timestamps": func(s string) string {
			s = strings.ReplaceAll(s, `"2026-12-06T16:21:29Z"`, `"2026-12-06T17:21:29.000+01:00"`)
			return strings.ReplaceAll(s, `"2026-12-06T16:21:28.6Z"`, `"2026-12-06T16:21:28.600000Z"`)
		},
		// Unknown members, at every level.
		"extra members": strings.NewReplacer(`"params":{`, `"params":{"x-new":[1,{"a":null}],`,
			`"result":{`, `"result":{"x-new":true,`, `"data":{`, `"data":{"x-new":"?",`, `{"jsonrpc"`, `{"x-top":1,"jsonrpc"`).Replace,
	}
	for name, vary := range variants {
		t.Run(name, func(t *testing.T) {
			dir, st, err := docRun(t, ex, docSession, vary)
			if !errors.As(err, &se) || st.Failure.Kind != host.FailureStep || st.Protocol != (host.ProtocolCounts{}) {
				t.Fatalf("err = %v, status %+v", err, st)
			}
			got := sessionRecords(t, dir)
			if name == "extra members" { // the data members are data
				for i := range got {
					got[i] = strings.ReplaceAll(got[i], ` x-new="?"`, "")
				}
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("the session differs from the examples' (-examples +variant):\n%s", d)
			}
		})
	}
}

// hostRecords are the events and metrics the host writes itself.
var hostRecords = map[string]bool{"run_start": true, "phase_complete": true, "run_failed": true,
	"artifacts_files_total": true, "artifacts_bytes_total": true}

// sessionRecords summarises a session's events and metrics, one line each,
// without the times the host adds.
func sessionRecords(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, name := range []string{logsink.EventsFile, logsink.MetricsFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(b)) {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("%s: %q: %v", name, line, err)
			}
			kind, what := "event", rec["event"]
			if what == nil {
				kind, what = "metric", rec["metric"]
			}
			if hostRecords[what.(string)] {
				continue // the host's own records carry its times
			}
			s := kind + " " + what.(string)
			if id, ok := rec["step_id"].(string); ok {
				s += " " + id
			}
			delete(rec, "seq")
			delete(rec, "session")
			for _, k := range slices.Sorted(maps.Keys(rec)) {
				if k != "event" && k != "metric" && k != "step_id" {
					v, _ := json.Marshal(rec[k])
					s += " " + k + "=" + string(v)
				}
			}
			out = append(out, s)
		}
	}
	return out
}

// TestContractInvalidConfig: the examples' refused prepare. The host
// sends the step's timeout and retry as the example shows, and makes of
// the -32006 an invalid manifest naming the step, with the data's
// message, before any step ran.
func TestContractInvalidConfig(t *testing.T) {
	_, st, err := docRun(t, docExchanges(t), "run-43", func(s string) string { return s })
	var me *tproxy.ManifestError
	if !errors.As(err, &me) || me.StepID != "extract" || me.Reason != `config: unknown key "delimeter" (did you mean "delimiter"?)` {
		t.Fatalf("err = %v, want the example's invalid config of step extract", err)
	}
	if st.Outcome != host.OutcomeFailed || st.Failure.Kind != host.FailureInvalidManifest || st.Failure.StepID != "extract" || st.StepsCompleted != 0 {
		t.Errorf("status = %+v, failure %+v", st, st.Failure)
	}
}

// TestContractCancellation: the examples' cancellation, through the
// client: the host sends $/cancelRequest as section 14 shows, returns at
// once, persists the step's step_failed when it comes, and the
// connection goes on to the cleanup.
func TestContractCancellation(t *testing.T) {
	ex := docExchanges(t)
	ex["exec_step slow"].request["params"].(map[string]any)["driver"] = "sleep"
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	failed := make(chan struct{})
	mem := &cancelOn{name: "step_start", cancel: cancel, failed: failed}
	c, err := host.Start(t.Context(), docWorker(t, ex, func(s string) string { return s }), host.WithSink(mem),
		host.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Prepare(t.Context(), tproxy.PrepareParams{SessionID: docSession}); err != nil {
		t.Fatal(err)
	}
	_, err = c.ExecStep(ctx, tproxy.ExecStepParams{StepID: "slow", Driver: "sleep"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	select { // the worker's answer to the cancel
	case <-failed:
	case <-t.Context().Done():
		t.Fatal("no step_failed after the cancel")
	}
	res, err := c.Cleanup(t.Context())
	if err != nil || res.StepsExecuted != 1 || res.TotalRows != 240 {
		t.Fatalf("cleanup after a cancelled step: %+v, %v", res, err)
	}
	var names []string
	for _, e := range mem.Events() {
		names = append(names, e.Name+" "+e.StepID)
		if e.Name == "step_failed" && e.Data["error_type"] != "cancelled" {
			t.Errorf("step_failed = %+v, want error_type cancelled", e)
		}
	}
	want := []string{"session_initialized ", "step_start slow", "step_failed slow", "session_cleanup "}
	if d := cmp.Diff(want, names); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
}

// cancelOn is a memory sink that cancels a context when an event of a
// name arrives.
type cancelOn struct {
	logsink.Memory
	name   string
	cancel func()
	failed chan struct{} // closed on step_failed
}

func (s *cancelOn) Event(ctx context.Context, e tproxy.Event) error {
	switch e.Name {
	case s.name:
		s.cancel()
	case "step_failed":
		close(s.failed)
	}
	return s.Memory.Event(ctx, e)
}

func fakeRun(t *testing.T, step func(id string) string) (string, *host.Status, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "session")
	st, err := host.RunManifest(t.Context(), scripted("", step), host.RunSpec{SessionID: "s1", Dir: dir,
		Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "d-step", Driver: "d"}}},
		Options:  []host.Option{host.WithLogger(slog.New(slog.DiscardHandler))}})
	return dir, st, err
}

// TestMalformedEventsNeverSilent: of 5 good and 5 malformed events, the
// 5 good ones are persisted, and the 5 others are counted in status.json
// and quoted in protocol_warning events, in the place they arrived.
func TestMalformedEventsNeverSilent(t *testing.T) {
	bad := []string{
		`{"name":"epoch","timestamp":1765038088,"data":{}}`,
		`{"name":"no zone","timestamp":"2026-12-06T16:21:28","data":{}}`,
		`{"timestamp":"2026-12-06T16:21:28Z","data":{"no":"name"}}`,
		`{"name":"data not an object","timestamp":"2026-12-06T16:21:28Z","data":[1]}`,
		`{"name":"no timestamp"}`,
	}
	dir, st, err := fakeRun(t, func(id string) string {
		var b strings.Builder
		for i, p := range bad {
			b.WriteString(`{"jsonrpc":"2.0","method":"event","params":{"name":"good","timestamp":"2026-12-06T16:21:28.5Z","step_id":"d-step","data":{"i":` + str(i) + `}}}` + "\n")
			b.WriteString(`{"jsonrpc":"2.0","method":"event","params":` + p + "}\n")
		}
		return b.String() + stepOK(id)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := (host.ProtocolCounts{DroppedNotifications: 5}); st.Protocol != want {
		t.Errorf("status protocol = %+v, want %+v", st.Protocol, want)
	}
	b, err := os.ReadFile(filepath.Join(dir, host.StatusFile))
	if err != nil || !strings.Contains(string(b), `"protocol": {`) || !strings.Contains(string(b), `"dropped_notifications": 5`) {
		t.Errorf("status.json lacks the counts: %s", b)
	}
	var seq []string
	for _, rec := range readJSONL(t, filepath.Join(dir, logsink.EventsFile)) {
		switch rec["event"] {
		case "good":
			seq = append(seq, "good")
		case tproxy.EventProtocolWarning:
			q, _ := rec["quote"].(string)
			if !slices.Contains(bad, q) || rec["method"] != "event" || rec["reason"] == "" {
				t.Errorf("warning %v does not quote one of the bad events", rec)
			}
			seq = append(seq, "warning")
		}
	}
	want := strings.Fields(strings.Repeat("good warning ", 5))
	if d := cmp.Diff(want, seq); d != "" {
		t.Errorf("events.jsonl (-want +got):\n%s", d)
	}
}

// TestWorkerRequestRefused: a request from the worker, which sends none,
// is answered -32601 with its id (section 12), and the step it came
// during goes on. The tap checks the host's answer against docs/schema.
func TestWorkerRequestRefused(t *testing.T) {
	answers := make(chan string, 1)
	tr := &transport.InMemory{Serve: wiretest.Serve(t, func(ctx context.Context, rw io.ReadWriteCloser) error {
		defer rw.Close()
		sc := bufio.NewScanner(rw)
		for sc.Scan() {
			var req struct {
				ID     json.RawMessage `json:"id"`
				Method string          `json:"method"`
			}
			json.Unmarshal(sc.Bytes(), &req)
			id := string(req.ID)
			switch req.Method {
			case tproxy.MethodPing:
				io.WriteString(rw, pong(tproxy.ProtocolVersion)(id)+"\n")
			case tproxy.MethodPrepare:
				io.WriteString(rw, `{"jsonrpc":"2.0","id":`+id+`,"result":{"status":"ready","session_id":"s1"}}`+"\n")
			case tproxy.MethodExecStep:
				io.WriteString(rw, `{"jsonrpc":"2.0","id":"w-1","method":"ask_host","params":{}}`+"\n")
				if !sc.Scan() {
					return sc.Err()
				}
				answers <- sc.Text()
				io.WriteString(rw, stepOK(id))
			}
		}
		return nil
	}, wiretest.HostFrames)} // the fake's request is wrong on purpose
	c, err := host.Start(t.Context(), tr, quiet()...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Prepare(t.Context(), tproxy.PrepareParams{SessionID: "s1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecStep(t.Context(), tproxy.ExecStepParams{StepID: "d-step", Driver: "d"}); err != nil {
		t.Fatalf("the step after the worker's request: %v", err)
	}
	var ans struct {
		ID     any             `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if line := <-answers; json.Unmarshal([]byte(line), &ans) != nil || ans.ID != "w-1" || ans.Result != nil || ans.Error.Code != tproxy.CodeMethodNotFound {
		t.Errorf("the host answered the worker's request with %s; want -32601 with its id", line)
	}
}

func readJSONL(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for line := range strings.Lines(string(b)) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%s: %q: %v", path, line, err)
		}
		out = append(out, rec)
	}
	return out
}

// TestMalformedResult: a result without the method's shape is a
// *host.ProtocolError naming the method and the member, with its own kind
// in status.json, and the connection stays usable.
func TestMalformedResult(t *testing.T) {
	for _, tt := range []struct{ result, field string }{
		{`{"status":"complete","step_id":"d-step","duration_ms":"fast"}`, "duration_ms"},
		{`{"status":"complete","step_id":"d-step"}`, "duration_ms"},
		{`{"status":"complete","step_id":"d-step","duration_ms":1,"rows_processed":2.5}`, "rows_processed"},
		{`{"status":"complete","step_id":"d-step","duration_ms":1,"artifacts":[{"path":"a","size":"1","sha256":"x"}]}`, "artifacts.size"},
		{`{"status":"complete","step_id":"d-step","duration_ms":1,"outputs":[]}`, "outputs"},
		{`{"status":"complete","step_id":"other","duration_ms":1}`, "step_id"},
		{`[]`, ""},
	} {
		t.Run(tt.result, func(t *testing.T) {
			step := func(id string) string { return `{"jsonrpc":"2.0","id":` + id + `,"result":` + tt.result + "}\n" }
			c := start(t, scripted("", step), &logsink.Memory{}, quiet()...)
			_, err := exec(t.Context(), c, "d", nil)
			var pe *host.ProtocolError
			if !errors.As(err, &pe) || pe.Method != tproxy.MethodExecStep || pe.Field != tt.field || errors.Is(err, host.ErrClosed) {
				t.Fatalf("err = %v (%#v), want a *host.ProtocolError naming exec_step and %q", err, pe, tt.field)
			}
			if _, err := c.Ping(t.Context(), "still there?"); err != nil {
				t.Errorf("the connection did not survive a malformed result: %v", err)
			}
			_, st, _ := fakeRun(t, step)
			if st.Failure == nil || st.Failure.Kind != host.FailureInvalidResult || !strings.Contains(st.Failure.Reason, "exec_step") {
				t.Errorf("status failure = %+v, want kind %s", st.Failure, host.FailureInvalidResult)
			}
		})
	}
}

// TestStepFailedByCode: a worker's -32004 is a step failure whatever its
// data holds.
func TestStepFailedByCode(t *testing.T) {
	for _, tt := range []struct{ errObj, stepID, errorType, message string }{
		{`{"code":-32004,"message":"boom"}`, "d-step", "unknown", "boom"},
		{`{"code":-32004,"message":"boom","data":"not an object"}`, "d-step", "unknown", "boom"},
		{`{"code":-32004,"message":"boom","data":{"error_type":"KeyError"}}`, "d-step", "KeyError", "boom"},
		{`{"code":-32004,"message":"step failed","data":{"step_id":"d-step","error_type":"ValueError","message":"bad row"}}`, "d-step", "ValueError", "bad row"},
	} {
		t.Run(tt.errObj, func(t *testing.T) {
			_, st, err := fakeRun(t, func(id string) string { return `{"jsonrpc":"2.0","id":` + id + `,"error":` + tt.errObj + "}\n" })
			var se *host.StepError
			if !errors.As(err, &se) || se.StepID != tt.stepID || se.ErrorType != tt.errorType || se.Message != tt.message {
				t.Fatalf("err = %v (%+v), want a *host.StepError", err, se)
			}
			if st.Failure.Kind != host.FailureStep || st.Failure.StepID != tt.stepID {
				t.Errorf("status failure = %+v", st.Failure)
			}
		})
	}
}
