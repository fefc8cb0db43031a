package conform

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tproxy/tproxy"
)

// checks is the kit, in the order Run runs it: the handshake first, then
// the methods, the step lifecycle, concurrency, bad input, and the end.
var checks = []check{
	{Check{"handshake", sections("§4", "§5.1", "§13"),
		"ping before anything else: the result's members, protocol 1, sorted drivers including the conformance drivers, echo (also without params)"}, checkHandshake},
	{Check{"version_mismatch", sections("§4"),
		"a ping naming protocol 2 is answered with the worker's own protocol, 1, and the worker goes on"}, checkVersionMismatch},
	{Check{"unknown_method", sections("§5", "§7"),
		"an unknown method is answered -32601 with the request's id, and the worker goes on"}, checkUnknownMethod},
	{Check{"string_ids", sections("§3"),
		"string ids (\"7\", \"\", non-ASCII) are echoed as strings, by ping, an error answer and exec_step"}, checkStringIDs},
	{Check{"number_ids", sections("§3"),
		"number ids from 0 to 2^53-1 are echoed as the same numbers; others (-7, 2.5, 1e2) are echoed or refused with -32600 and id null"}, checkNumberIDs},
	{Check{"not_prepared", sections("§5.3", "§5.4", "§5.5", "§7"),
		"exec_step, cleanup and fetch_artifact before prepare are answered -32001"}, checkNotPrepared},
	{Check{"second_prepare", sections("§5.2"),
		"prepare of the same session again is not a mismatch; prepare of another session is -32002, and the first session goes on"}, checkSecondPrepare},
	{Check{"unknown_driver", sections("§5.2", "§5.3", "§9"),
		"a driver the worker lacks fails prepare and exec_step with -32003, before any step runs"}, checkUnknownDriver},
	{Check{"invalid_params", sections("§3", "§5.1", "§5.2", "§5.3"),
		"invalid ids (session, manifest step, exec_step step and input), a repeated step id, an unknown log_level, a ping data of the wrong type: -32602"}, checkInvalidParams},
	{Check{"missing_params", sections("§3", "§5.2", "§5.3", "§5.5", "§7"),
		"params that are absent, not an object, or miss a required member: -32602"}, checkMissingParams},
	{Check{"step_success", sections("§5.2", "§5.3", "§9"),
		"prepare's session_initialized and steps_total; a step's step_start, events, rows_processed, step_duration_ms, step_complete before its result; the result's members"}, checkStepSuccess},
	{Check{"step_failure", sections("§5.3", "§7", "§9"),
		"a failing driver: step_start, step_failed, then -32004 with step_id, error_type conform_failure and the message"}, checkStepFailure},
	{Check{"event_order", sections("§8"),
		"1000 events from one step arrive in emission order, all before the step's response"}, checkEventOrder},
	{Check{"inputs", sections("§5.3", "§7", "§9"),
		"an input reads an output an earlier step kept; an input no step kept is -32005, before any step runs"}, checkInputs},
	{Check{"cancel_running", sections("§8", "§9"),
		"$/cancelRequest of a running step: step_failed with error_type cancelled, then -32800, long before the step would end; the worker goes on"}, checkCancelRunning},
	{Check{"cancel_queued", sections("§8"),
		"$/cancelRequest of a queued exec_step: -32800 without running it"}, checkCancelQueued},
	{Check{"ping_while_busy", sections("§5.1", "§8"),
		"a ping sent while a step runs is answered before the step's response"}, checkPingWhileBusy},
	{Check{"parse_error", sections("§12", "§7"),
		"lines that are not JSON or not UTF-8 are answered -32700 with id null, and the worker goes on"}, checkParseError},
	{Check{"invalid_request", sections("§12", "§7"),
		"JSON that is not a request (not an object, a batch, a wrong or missing jsonrpc or method, a bad id) is answered -32600 with the right id"}, checkInvalidRequest},
	{Check{"ignored_input", sections("§12", "§2", "§3"),
		"blank lines, responses, unknown notifications, malformed or unknown cancels get no answer; unknown members are ignored"}, checkIgnoredInput},
	{Check{"framing", sections("§2"),
		"CRLF line endings, a request written byte by byte (split UTF-8), two requests in one write, white space, escapes"}, checkFraming},
	{Check{"oversize_frame", sections("§2", "§12"),
		"a line one byte over the frame cap is answered -32600 with id null, and the worker goes on"}, checkOversizeFrame},
	{Check{"heartbeats", sections("§8", "§6.4"),
		"a 4.5 s step: at least two heartbeats naming it, none more than 3 s apart from the request to the response"}, checkHeartbeats},
	{Check{"artifacts", sections("§10", "§5.5"),
		"files a step wrote are listed with size and SHA-256 and fetched in 7-byte chunks to the same bytes, eof on the last; unclean, unknown or directory paths are -32602"}, checkArtifacts},
	{Check{"integer_notation", sections("§3"),
		"integers sent as 2.0 or 4e0 (exec_step config, fetch_artifact offset and length, ping protocol) are accepted"}, checkIntegerNotation},
	{Check{"stray_stdout", sections("§2"),
		"a driver printing to stdout in every way: only protocol messages reach the protocol channel"}, checkStrayStdout},
	{Check{"cleanup", sections("§5.4", "§9", "§7"),
		"cleanup sends session_cleanup and answers the session's totals; exec_step, cleanup and fetch_artifact after it are -32001"}, checkCleanup},
	{Check{"eof_exit", sections("§8"),
		"at the end of its input the worker cancels the step in flight (step_failed with error_type cancelled, then -32800), answers a queued exec_step -32800 without running it, ends its output and exits with status 0"}, checkEOFExit},
}

const (
	tickEvent  = "conform_tick"
	inputEvent = "conform_input"
)

func checkHandshake(c *checkRun) {
	c.start()
	r := c.ping("conform-handshake")
	drivers := r.object("worker").strings("drivers")
	for _, d := range driverNames {
		if !slices.Contains(drivers, d) {
			c.failf("§13", "ping lists no driver %q (it lists %q): a worker under test registers the conformance drivers", d, drivers)
		}
	}
	f, _ := c.call("§5.1", tproxy.MethodPing, nil)
	c.pong(f, "")
	f, _ = c.call("§5.1", tproxy.MethodPing, cfg{})
	c.pong(f, "")
}

func checkVersionMismatch(c *checkRun) {
	c.start()
	f, _ := c.call("§4", tproxy.MethodPing, cfg{"data": "conform-v2", "protocol": 2})
	r := c.result("§4", f, "ping naming protocol 2")
	if p := r.integer("protocol"); p != tproxy.ProtocolVersion {
		c.failf("§4", "a ping naming protocol 2 was answered with protocol %d; a worker answers with its own version, %d, whatever the host's", p, tproxy.ProtocolVersion)
	}
	c.pong(f, "conform-v2")
	c.ping("conform-after-v2")
}

func checkUnknownMethod(c *checkRun) {
	c.startPinged()
	c.callError("§7", "the unknown method conform.no_such_method", tproxy.CodeMethodNotFound, "conform.no_such_method", cfg{})
	c.callError("§7", "the unknown method conform_no_such_method (no params)", tproxy.CodeMethodNotFound, "conform_no_such_method", nil)
	c.ping("conform-after-unknown-method")
}

func checkStringIDs(c *checkRun) {
	c.start()
	for _, id := range []string{`"conform-1"`, `"7"`, `""`, `"id with spaces, ünïcödé and \"quotes\""`} {
		f, _ := c.await("§3", c.sendID(id, tproxy.MethodPing, cfg{"data": "ids"}))
		c.pong(f, "ids")
	}
	f, _ := c.await("§3", c.sendID(`"conform-unknown"`, "conform.no_such_method", nil))
	c.wantError("§7", f, "an unknown method", tproxy.CodeMethodNotFound)
	f, _ = c.await("§3", c.sendID(`"conform-exec"`, tproxy.MethodExecStep, tproxy.ExecStepParams{StepID: "early", Driver: driverEmit, Config: cfg{"events": 1}}))
	c.wantError("§5.3", f, "exec_step before prepare", tproxy.CodeNotPrepared)
}

func checkNumberIDs(c *checkRun) {
	c.start()
	for _, id := range []string{"0", "4294967297", "9007199254740991"} {
		f, _ := c.await("§3", c.sendID(id, tproxy.MethodPing, cfg{"data": "ids"}))
		c.pong(f, "ids")
	}
	// Numbers a host never sends: echoed, or refused with -32600 and a
	// null id.
	for _, id := range []string{"-7", "2.5", "1e2"} {
		req := c.sendID(id, tproxy.MethodPing, cfg{"data": "ids"})
		refused := c.expect("null", "the refusal of id "+id)
		f, _ := c.await("§3", req, refused)
		delete(c.pending, req.key)
		delete(c.pending, refused.key)
		if f.id == nil {
			c.wantError("§3", f, "a ping with id "+id, tproxy.CodeInvalidRequest)
			continue
		}
		c.pong(f, "ids")
	}
	f, _ := c.await("§3", c.sendID("3", tproxy.MethodExecStep, tproxy.ExecStepParams{StepID: "early", Driver: driverEmit, Config: cfg{"events": 1}}))
	c.wantError("§5.3", f, "exec_step before prepare", tproxy.CodeNotPrepared)
}

func checkNotPrepared(c *checkRun) {
	c.startPinged()
	e, notes := c.callError("§5.3", "exec_step before prepare", tproxy.CodeNotPrepared,
		tproxy.MethodExecStep, tproxy.ExecStepParams{StepID: "early", Driver: driverEmit, Config: cfg{"events": 1}})
	_ = e
	c.noLifecycle(notes, "early", "exec_step before prepare")
	c.callError("§5.4", "cleanup before prepare", tproxy.CodeNotPrepared, tproxy.MethodCleanup, cfg{})
	c.callError("§5.5", "fetch_artifact before prepare", tproxy.CodeNotPrepared, tproxy.MethodFetchArtifact,
		tproxy.FetchArtifactParams{StepID: "early", Path: "cleaned_config.json", Offset: 0, Length: 0})
	c.ping("conform-after-not-prepared")
}

func checkSecondPrepare(c *checkRun) {
	c.startPinged()
	steps := []tproxy.StepSpec{step("first", driverEmit, cfg{"events": 1})}
	c.prepare("conform-first", steps...)
	params := tproxy.PrepareParams{SessionID: "conform-first", Manifest: tproxy.Manifest{Steps: steps}}
	f, _ := c.call("§5.2", tproxy.MethodPrepare, params)
	if f.err != nil && f.err.code == tproxy.CodeSessionMismatch {
		c.failf("§5.2", "a second prepare of the same session was answered %s; -32002 is for a prepare naming another session", f.err)
	}
	if f.err == nil {
		c.ready(f, "conform-first", steps)
	}
	params.SessionID = "conform-second"
	c.callError("§5.2", "a prepare of another session", tproxy.CodeSessionMismatch, tproxy.MethodPrepare, params)
	c.execOK("§5.2", "first", driverEmit, cfg{"events": 1}, nil)
}

func checkUnknownDriver(c *checkRun) {
	c.startPinged()
	const missing = "conform.no_such_driver"
	c.callError("§5.2", "a prepare whose manifest names driver "+missing, tproxy.CodeUnknownDriver, tproxy.MethodPrepare,
		tproxy.PrepareParams{SessionID: "conform-drivers", Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{
			step("known", driverEmit, cfg{"events": 1}), step("unknown", missing, nil)}}})
	c.prepare("conform-drivers", step("known", driverEmit, cfg{"events": 1}))
	_, notes := c.callError("§5.3", "exec_step with driver "+missing, tproxy.CodeUnknownDriver, tproxy.MethodExecStep,
		tproxy.ExecStepParams{StepID: "unknown", Driver: missing})
	c.noLifecycle(notes, "unknown", "exec_step with an unknown driver")
	c.execOK("§5.3", "known", driverEmit, cfg{"events": 1}, nil)
}

func checkInvalidParams(c *checkRun) {
	c.startPinged()
	emit := func(id string) tproxy.StepSpec { return step(id, driverEmit, cfg{"events": 1}) }
	prepares := []struct {
		what   string
		params any
	}{
		{`session_id "../escape"`, tproxy.PrepareParams{SessionID: "../escape", Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{emit("a")}}}},
		{`an empty session_id`, cfg{"session_id": "", "manifest": cfg{"steps": []any{}}}},
		{`manifest step id "bad/step"`, tproxy.PrepareParams{SessionID: "conform-params", Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{emit("bad/step")}}}},
		{`manifest step id ".hidden"`, tproxy.PrepareParams{SessionID: "conform-params", Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{emit(".hidden")}}}},
		{`a manifest step id used twice`, tproxy.PrepareParams{SessionID: "conform-params", Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{emit("twice"), emit("twice")}}}},
		{`log_level "loud"`, tproxy.PrepareParams{SessionID: "conform-params", Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{emit("a")}}, LogLevel: "loud"}},
		{`log_level "info+2"`, tproxy.PrepareParams{SessionID: "conform-params", Manifest: tproxy.Manifest{Steps: []tproxy.StepSpec{emit("a")}}, LogLevel: "info+2"}},
	}
	for _, p := range prepares {
		c.callError("§5.2", "prepare with "+p.what, tproxy.CodeInvalidParams, tproxy.MethodPrepare, p.params)
	}
	longest := strings.Repeat("a", 128) // 128 characters is still an id
	steps := []tproxy.StepSpec{emit("a"), emit(longest)}
	f, _ := c.call("§5.2", tproxy.MethodPrepare, tproxy.PrepareParams{SessionID: "conform-params", Manifest: tproxy.Manifest{Steps: steps}, LogLevel: "Warn"})
	c.ready(f, "conform-params", steps)
	for _, id := range []string{"bad step", "-dash-first", "dot/../slash", "", strings.Repeat("a", 129)} {
		what := fmt.Sprintf("exec_step with step_id %.20q", id)
		_, notes := c.callError("§5.3", what, tproxy.CodeInvalidParams, tproxy.MethodExecStep,
			tproxy.ExecStepParams{StepID: id, Driver: driverEmit, Config: cfg{"events": 1}})
		c.noLifecycle(notes, id, what)
	}
	what := `exec_step with an input from step "bad/step"`
	_, notes := c.callError("§5.3", what, tproxy.CodeInvalidParams, tproxy.MethodExecStep,
		tproxy.ExecStepParams{StepID: "a", Driver: driverInput, Inputs: map[string]tproxy.InputRef{"in": {FromStep: "bad/step", Key: "count"}}})
	c.noLifecycle(notes, "a", what)
	c.callError("§5.1", "ping with data 5, not a string", tproxy.CodeInvalidParams, tproxy.MethodPing, cfg{"data": 5})
	c.execOK("§3", longest, driverEmit, cfg{"events": 1}, nil)
}

func checkMissingParams(c *checkRun) {
	c.startPinged()
	const session = "conform-missing"
	prepares := []struct {
		what   string
		params any
	}{
		{"no params", nil},
		{"params that are an array", []any{session}},
		{"no session_id", cfg{"manifest": cfg{"steps": []any{}}}},
		{"no manifest", cfg{"session_id": session}},
		{"a manifest without steps", cfg{"session_id": session, "manifest": cfg{}}},
		{"a step without an id", cfg{"session_id": session, "manifest": cfg{"steps": []any{cfg{"driver": driverEmit}}}}},
		{"a step without a driver", cfg{"session_id": session, "manifest": cfg{"steps": []any{cfg{"id": "nodriver"}}}}},
	}
	for _, p := range prepares {
		c.callError("§5.2", "prepare with "+p.what, tproxy.CodeInvalidParams, tproxy.MethodPrepare, p.params)
	}
	files := cfg{"files": cfg{"x.txt": "x"}}
	c.prepare(session, step("files", driverArtifacts, files), step("refused", driverInput, nil))
	c.execOK("§5.3", "files", driverArtifacts, files, nil)
	execs := []struct {
		what   string
		params any
	}{
		{"no params", nil},
		{"no step_id", cfg{"driver": driverEmit}},
		{"no driver", cfg{"step_id": "refused"}},
		{"a config that is a string", cfg{"step_id": "refused", "driver": driverInput, "config": "x"}},
		{"an input without its key", cfg{"step_id": "refused", "driver": driverInput, "inputs": cfg{"in": cfg{"from_step": "files"}}}},
	}
	for _, p := range execs {
		what := "exec_step with " + p.what
		_, notes := c.callError("§5.3", what, tproxy.CodeInvalidParams, tproxy.MethodExecStep, p.params)
		c.noLifecycle(notes, "refused", what)
	}
	fetches := []struct {
		what   string
		params any
	}{
		{"no offset", cfg{"step_id": "files", "path": "x.txt", "length": 1}},
		{"no length", cfg{"step_id": "files", "path": "x.txt", "offset": 0}},
		{"no path", cfg{"step_id": "files", "offset": 0, "length": 1}},
		{"an offset that is a string", cfg{"step_id": "files", "path": "x.txt", "offset": "0", "length": 1}},
	}
	for _, p := range fetches {
		c.callError("§5.5", "fetch_artifact with "+p.what, tproxy.CodeInvalidParams, tproxy.MethodFetchArtifact, p.params)
	}
}

func checkStepSuccess(c *checkRun) {
	c.startPinged()
	const session = "conform-success"
	notes := c.prepare(session, step("produce", driverEmit, cfg{"events": 3}), step("again", driverEmit, cfg{"events": 0}))
	i := find(notes, isEvent("session_initialized", ""))
	if i < 0 {
		c.failf("§9", "no session_initialized event before prepare's result")
	}
	d := c.data("§9", notes[i])
	if id := d.id("session_id"); id != session {
		c.failf("§9", "session_initialized: data.session_id is %q; want %q", id, session)
	}
	if n := d.integer("steps_total"); n != 2 {
		c.failf("§9", "session_initialized: data.steps_total is %d; want 2, the manifest's steps", n)
	}
	i = find(notes, isMetric("steps_total", ""))
	if i < 0 {
		c.failf("§9", "no steps_total metric before prepare's result")
	}
	if v := c.shape("§9", "steps_total metric", notes[i].params).number("value"); v != 2 {
		c.failf("§9", "steps_total metric is %v; want 2, the manifest's steps", v)
	}

	res, notes := c.execOK("§5.3", "produce", driverEmit, cfg{"events": 3}, nil)
	if res.rows != 3 {
		c.failf("§5.3", "exec_step result: rows_processed is %d; conform.emit with 3 events sets 3 rows", res.rows)
	}
	if !res.outputs.has("count") {
		c.failf("§5.3", `exec_step result: outputs has no "count"; conform.emit keeps the output count`)
	}
	c.succeeded(notes, "produce", driverEmit, 1, 3, 3, []string{"count"})

	res, notes = c.execOK("§5.3", "again", driverEmit, cfg{"events": 0}, nil)
	if res.rows != 0 {
		c.failf("§5.3", "exec_step result: rows_processed is %d; conform.emit with 0 events sets 0 rows", res.rows)
	}
	c.succeeded(notes, "again", driverEmit, 2, 0, 0, []string{"count"})
}

func checkStepFailure(c *checkRun) {
	c.startPinged()
	const msg = "conform: this step fails on purpose"
	config := cfg{"message": msg}
	c.prepare("conform-failure", step("broken", driverFail, config))
	f, notes := c.await("§5.3", c.exec("broken", driverFail, config, nil))
	e := c.wantError("§5.3", f, "exec_step of a failing step", tproxy.CodeStepFailed)
	d := c.stepFailure(e, "broken")
	if t := d.str("error_type"); t != failureType {
		c.failf("§7", "step failure: error_type is %q; conform.fail fails with %q", t, failureType)
	}
	if m := d.str("message"); m != msg {
		c.failf("§7", "step failure: message is %q; want the driver's message %q", m, msg)
	}
	ev := c.failed(notes, "broken", driverFail, 1)
	if t := ev.str("error_type"); t != failureType {
		c.failf("§9", "step_failed: data.error_type is %q; want %q", t, failureType)
	}
	if m := ev.str("message"); m != msg {
		c.failf("§9", "step_failed: data.message is %q; want %q, as in the step failure", m, msg)
	}
	c.ping("conform-after-failure")
}

func checkEventOrder(c *checkRun) {
	c.startPinged()
	const n = 1000
	config := cfg{"events": n}
	c.prepare("conform-order", step("many", driverEmit, config))
	res, notes := c.execOK("§8", "many", driverEmit, config, nil)
	c.succeeded(notes, "many", driverEmit, 1, n, n, []string{"count"})
	if res.rows != n {
		c.failf("§5.3", "exec_step result: rows_processed is %d; want %d", res.rows, n)
	}
}

func checkInputs(c *checkRun) {
	c.startPinged()
	ref := func(from, key string) map[string]tproxy.InputRef {
		return map[string]tproxy.InputRef{"in": {FromStep: from, Key: key}}
	}
	c.prepare("conform-inputs",
		step("source", driverEmit, cfg{"events": 4}),
		step("never", driverEmit, cfg{"events": 1}),
		tproxy.StepSpec{ID: "sink", Driver: driverInput, Needs: []string{"source"}, Inputs: ref("source", "count")},
		step("orphan", driverInput, nil),
		step("nokey", driverInput, nil))
	c.execOK("§5.3", "source", driverEmit, cfg{"events": 4}, nil)
	_, notes := c.execOK("§5.3", "sink", driverInput, nil, ref("source", "count"))
	i := find(notes, isEvent(inputEvent, "sink"))
	if i < 0 {
		c.failf("§13", "no conform_input event with step_id %q before the step's result", "sink")
	}
	v, ok := c.data("§13", notes[i]).get("value")
	if want := json.Number("4"); !ok || !jsonEqual(v, want) {
		c.failf("§5.3", "conform_input carried the value %s; want 4, the output count that step source kept", jsonType(v))
	}
	for _, x := range []struct{ id, from, key, why string }{
		{"orphan", "never", "count", "a step that has not run"},
		{"nokey", "source", "nope", "an output the step did not keep"},
	} {
		what := fmt.Sprintf("exec_step with an input from %s", x.why)
		_, notes := c.callError("§5.3", what, tproxy.CodeInputUnavailable, tproxy.MethodExecStep,
			tproxy.ExecStepParams{StepID: x.id, Driver: driverInput, Inputs: ref(x.from, x.key)})
		c.noLifecycle(notes, x.id, what)
	}
}

func checkCancelRunning(c *checkRun) {
	c.startPinged()
	slow := cfg{"ms": 30000}
	c.prepare("conform-cancel", step("slow", driverSleep, slow), step("after", driverEmit, cfg{"events": 1}))
	req := c.exec("slow", driverSleep, slow, nil)
	notes := c.waitEvent("§9", "step_start", "slow", req)
	c.cancel(req)
	sent := time.Now()
	f, more := c.awaitFor("§8", "-32800 for the cancelled "+req.String(), req)
	notes = append(notes, more...)
	if f.err == nil || f.err.code != tproxy.CodeRequestCancelled {
		c.failf("§8", "the cancelled exec_step was answered %s after %s; want -32800", errText(f), since(sent))
	}
	d := c.failed(notes, "slow", driverSleep, 1)
	if t := d.str("error_type"); t != "cancelled" {
		c.failf("§9", `step_failed of the cancelled step: data.error_type is %q; want "cancelled"`, t)
	}
	c.ping("conform-after-cancel")
	c.execOK("§8", "after", driverEmit, cfg{"events": 1}, nil)
}

func checkCancelQueued(c *checkRun) {
	c.startPinged()
	slow := cfg{"ms": 30000}
	c.prepare("conform-queue", step("slow", driverSleep, slow), step("queued", driverEmit, cfg{"events": 1}))
	running := c.exec("slow", driverSleep, slow, nil)
	queued := c.exec("queued", driverEmit, cfg{"events": 1}, nil)
	notes := c.waitEvent("§9", "step_start", "slow", running)
	c.cancel(queued)
	c.cancel(running)
	for left := []request{running, queued}; len(left) > 0; {
		f, more := c.awaitFor("§8", "-32800 for the cancelled exec_step requests", left...)
		notes = append(notes, more...)
		i := slices.IndexFunc(left, func(r request) bool { return r.key == idKey(f.id) })
		if f.err == nil || f.err.code != tproxy.CodeRequestCancelled {
			c.failf("§8", "the cancelled %s was answered %s; want -32800", left[i], errText(f))
		}
		left = slices.Delete(left, i, i+1)
	}
	if i := find(notes, isEvent("step_start", "queued")); i >= 0 {
		c.failf("§8", "the exec_step cancelled while queued ran (step_start of step %q); a queued request is answered -32800 without running it", "queued")
	}
	c.ping("conform-after-cancel")
}

func checkPingWhileBusy(c *checkRun) {
	c.startPinged()
	busy := cfg{"ms": 1500}
	c.prepare("conform-busy", step("busy", driverSleep, busy))
	req := c.exec("busy", driverSleep, busy, nil)
	c.waitEvent("§9", "step_start", "busy", req)
	p := c.send(tproxy.MethodPing, cfg{"data": "while busy"})
	sent := time.Now()
	f, _ := c.await("§8", req, p)
	if idKey(f.id) == req.key {
		c.failf("§8", "the step's response came before the answer to a ping sent %s earlier while it ran; ping is answered at once", since(sent))
	}
	c.pong(f, "while busy")
	f, _ = c.await("§5.3", req)
	c.stepResult(f, "busy", driverSleep)
}

// garbage writes line and awaits the answer code with id wantID (JSON).
// readable lists ids the line holds that a lenient worker might answer
// with instead.
func (c *checkRun) garbage(what, line string, code int64, wantID string, readable ...string) {
	want := c.expect(wantID, "the answer to "+what)
	reqs := []request{want}
	for _, id := range readable {
		if id != wantID {
			reqs = append(reqs, c.expect(id, "the answer to "+what))
		}
	}
	c.writeLine(line)
	f, _ := c.awaitFor("§12", fmt.Sprintf("%s answer to %s", codeText(code), what), reqs...)
	for _, r := range reqs[1:] {
		delete(c.pending, r.key)
	}
	delete(c.pending, want.key)
	if idKey(f.id) != want.key {
		c.failf("§12", "%s was answered with id %s (%s); want %s with id %s", what, idText(f.id), errText(f), codeText(code), wantID)
	}
	c.wantError("§12", f, what, code)
}

func errText(f *frame) string {
	if f.err == nil {
		return "a result"
	}
	return f.err.String()
}

func checkParseError(c *checkRun) {
	c.startPinged()
	for _, g := range []struct{ what, line, id string }{
		{"a line that is not JSON", "this is not json", ""},
		{"a truncated JSON object", `{"jsonrpc":"2.0","id":901,"method":"ping"`, ""},
		{"a JSON object followed by more text", `{"jsonrpc":"2.0","id":902,"method":"ping"} trailing`, "902"},
		{"a request with NaN, which is not JSON", `{"jsonrpc":"2.0","id":903,"method":"ping","params":{"data":NaN}}`, "903"},
		{"single-quoted strings", `{'jsonrpc':'2.0','id':904,'method':'ping'}`, ""},
		{"a request that is not valid UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":905,\"method\":\"ping\",\"params\":{\"data\":\"\xff\xfe\"}}", "905"},
	} {
		var readable []string
		if g.id != "" {
			readable = append(readable, g.id)
		}
		c.garbage(g.what, g.line, tproxy.CodeParseError, "null", readable...)
	}
	c.ping("conform-after-parse-errors")
}

func checkInvalidRequest(c *checkRun) {
	c.startPinged()
	for _, g := range []struct{ what, line, id string }{
		{"a JSON array", `[1,2]`, "null"},
		{"a batch", `[{"jsonrpc":"2.0","id":910,"method":"ping"}]`, "null"},
		{"a JSON number", `42`, "null"},
		{"a JSON string", `"ping"`, "null"},
		{"JSON null", `null`, "null"},
		{`a request with "jsonrpc":"1.0"`, `{"jsonrpc":"1.0","id":911,"method":"ping"}`, "911"},
		{`a request without "jsonrpc"`, `{"id":912,"method":"ping"}`, "912"},
		{`a request with "jsonrpc" a number`, `{"jsonrpc":2.0,"id":"conform-913","method":"ping"}`, `"conform-913"`},
		{`an object with an id and no method`, `{"jsonrpc":"2.0","id":914}`, "914"},
		{`a request whose method is a number`, `{"jsonrpc":"2.0","id":915,"method":5}`, "915"},
		{`a request whose id is an object`, `{"jsonrpc":"2.0","id":{"n":916},"method":"ping"}`, "null"},
		{`a request whose id is a boolean`, `{"jsonrpc":"2.0","id":true,"method":"ping"}`, "null"},
		{`a request whose id is an array`, `{"jsonrpc":"2.0","id":[917],"method":"ping"}`, "null"},
	} {
		readable := []string{"910", "916", "917"}
		c.garbage(g.what, g.line, tproxy.CodeInvalidRequest, g.id, readable...)
	}
	c.ping("conform-after-invalid-requests")
}

func checkIgnoredInput(c *checkRun) {
	c.startPinged()
	for _, line := range []string{
		"",
		" \t ",
		"\r",
		`{"jsonrpc":"2.0","id":920,"result":{"status":"pong"}}`,
		`{"jsonrpc":"2.0","id":921,"error":{"code":-32000,"message":"an error from the host"}}`,
		`{"jsonrpc":"2.0","method":"conform.unknown_notification","params":{"x":1}}`,
		`{"jsonrpc":"2.0","method":"$/cancelRequest"}`,
		`{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":[1]}}`,
		`{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":922}}`,
	} {
		c.writeLine(line)
	}
	r := c.expect("923", tproxy.MethodPing)
	c.writeLine(`{"jsonrpc":"2.0","id":923,"method":"ping","params":{"data":"unknown members","conform_extra":{"a":[1]}},"conform_extra":true}`)
	f, _ := c.await("§3", r)
	c.pong(f, "unknown members")
	c.ping("conform-after-ignored-input")
}

func checkFraming(c *checkRun) {
	c.start()
	pingLine := func(id int, data string) string {
		d, _ := json.Marshal(data)
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping","params":{"data":%s}}`, id, d)
	}
	r := c.expect("930", tproxy.MethodPing)
	c.write([]byte(pingLine(930, "crlf") + "\r\n"))
	f, _ := c.await("§2", r)
	c.pong(f, "crlf")

	// Byte by byte, with pauses, so that multi-byte characters arrive
	// split across reads.
	const split = "chunks: é ü → 世界 🎉"
	r = c.expect("931", tproxy.MethodPing)
	b := []byte(pingLine(931, split) + "\n")
	for i := range b {
		c.write(b[i : i+1])
		if i%8 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	f, _ = c.await("§2", r)
	c.pong(f, split)

	r1, r2 := c.expect("932", tproxy.MethodPing), c.expect("933", tproxy.MethodPing)
	c.write([]byte(pingLine(932, "first") + "\n" + pingLine(933, "second") + "\n"))
	f, _ = c.await("§2", r1)
	c.pong(f, "first")
	f, _ = c.await("§2", r2)
	c.pong(f, "second")

	r = c.expect("934", tproxy.MethodPing)
	c.writeLine(` { "jsonrpc" : "2.0" , "id" : 934 , "method" : "ping" , "params" : { "data" : "spaced" } } `)
	f, _ = c.await("§2", r)
	c.pong(f, "spaced")

	// Escapes the worker decodes, and must escape again on the way back:
	// a raw newline in its answer would split the frame.
	const escaped = "line\nbreak\r\t \"quoted\" back\\slash \u2028 \u0001"
	r = c.expect("935", tproxy.MethodPing)
	c.writeLine(pingLine(935, escaped))
	f, _ = c.await("§2", r)
	c.pong(f, escaped)
}

func checkOversizeFrame(c *checkRun) {
	c.startPinged()
	n := c.cfg.maxFrame + 1
	prefix := `{"jsonrpc":"2.0","id":940,"method":"ping","params":{"data":"`
	const suffix = `"}}`
	line := make([]byte, 0, n+1)
	if pad := n - len(prefix) - len(suffix); pad >= 0 {
		line = append(line, prefix...)
		line = append(line, bytes.Repeat([]byte("x"), pad)...)
		line = append(line, suffix...)
	} else {
		line = append(line, bytes.Repeat([]byte("x"), n)...)
	}
	what := fmt.Sprintf("a frame of %d bytes, one over the cap", n)
	answer := c.expect("null", "the -32600 answer to "+what)
	served := c.expect("940", "ping")
	c.write(append(line, '\n'))
	f, _ := c.awaitFor("§12", fmt.Sprintf("-32600 answer (id null) to %s", what), answer, served)
	delete(c.pending, served.key)
	delete(c.pending, answer.key)
	if idKey(f.id) == served.key {
		c.failf("§2", "the worker served %s as a request (%s); a frame over the cap is discarded and answered -32600 with id null (tell the kit a larger cap with -max-frame)", what, errText(f))
	}
	c.wantError("§12", f, what, tproxy.CodeInvalidRequest)
	c.ping("conform-after-oversize")
}

// Heartbeats (§8): the step runs long enough for two beats at the
// 2-second maximum; gaps are measured with a second's slack for the
// pipes and schedulers in between.
const (
	beatStep   = 4500 * time.Millisecond
	maxBeatGap = 3 * time.Second
)

func checkHeartbeats(c *checkRun) {
	c.startPinged()
	config := cfg{"ms": beatStep.Milliseconds()}
	c.prepare("conform-beats", step("beating", driverSleep, config))
	sent := time.Now()
	req := c.exec("beating", driverSleep, config, nil)
	f, notes := c.await("§8", req)
	c.stepResult(f, "beating", driverSleep)
	var beats int
	last, from := sent, "the request"
	var gap time.Duration
	var gapFrom, gapTo string
	note := func(at time.Time, what string) {
		if d := at.Sub(last); d > gap {
			gap, gapFrom, gapTo = d, from, what
		}
		last, from = at, what
	}
	for _, n := range notes {
		if n.method != tproxy.MethodHeartbeat {
			continue
		}
		if id := n.stepID(); id != "" && id != "beating" {
			c.failf("§6.4", "a heartbeat while step %q ran names step %q", "beating", id)
		} else if id != "" {
			beats++
		}
		note(n.at, fmt.Sprintf("heartbeat %d", beats))
	}
	note(f.at, "the response")
	if beats < 2 {
		c.failf("§8", "%d heartbeats naming the step during a %v step; a busy worker beats at least every 2s, with the running step's step_id", beats, beatStep)
	}
	if gap > maxBeatGap {
		c.failf("§8", "%v without a heartbeat, from %s to %s; a busy worker beats at least every 2s", gap.Round(time.Millisecond), gapFrom, gapTo)
	}
}

func checkArtifacts(c *checkRun) {
	c.startPinged()
	files := map[string]string{
		// 28 bytes: the last 7-byte chunk ends exactly at the end.
		"report.txt":          "conformance report\nline two\n",
		"nested/dir/data.csv": "id,name\n1,Zoë\n2,Ωmega → ok\n",
	}
	config := cfg{"files": files}
	c.prepare("conform-artifacts", step("files", driverArtifacts, config))
	res, _ := c.execOK("§5.3", "files", driverArtifacts, config, nil)
	listed := map[string]artifact{}
	for _, a := range res.artifacts {
		listed[a.path] = a
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		a, ok := listed[name]
		if !ok {
			c.failf("§10", "the step's result lists no artifact %q (it lists: %s)", name, paths(res.artifacts))
		}
		if a.size != int64(len(files[name])) {
			c.failf("§10", "artifact %q: size is %d; the file has %d bytes", name, a.size, len(files[name]))
		}
		if sum := sha(files[name]); a.sha256 != sum {
			c.failf("§10", "artifact %q: sha256 is %s; the file's is %s", name, a.sha256, sum)
		}
	}
	for _, a := range res.artifacts {
		chunk := 0 // the worker's chunk, 1 MiB
		if _, ours := files[a.path]; ours {
			chunk = 7
		}
		data := c.fetch("files", a, chunk)
		if want, ours := files[a.path]; ours && string(data) != want {
			c.failf("§5.5", "artifact %q fetched as %q; the file holds %q", a.path, data, want)
		}
	}
	a := listed["report.txt"]
	f, _ := c.call("§5.5", tproxy.MethodFetchArtifact, cfg{"step_id": "files", "path": a.path, "offset": a.size, "length": 7})
	r := c.result("§5.5", f, "fetch_artifact at the end of the file")
	if !r.boolean("eof") || r.str("data") != "" {
		c.failf("§5.5", `fetch_artifact at offset %d of %q, its size: got data %q, eof %v; want "", true`, a.size, a.path, r.str("data"), r.boolean("eof"))
	}
	for _, p := range []string{"../x", "/etc/passwd", "nested/../report.txt", "./report.txt", "nested//dir/data.csv", "", "missing.txt", "nested/dir"} {
		c.callError("§5.5", fmt.Sprintf("fetch_artifact of path %q", p), tproxy.CodeInvalidParams, tproxy.MethodFetchArtifact,
			cfg{"step_id": "files", "path": p, "offset": 0, "length": 7})
	}
	for _, x := range []struct {
		what   string
		params cfg
	}{
		{"an unknown step", cfg{"step_id": "no-such-step", "path": "report.txt", "offset": 0, "length": 7}},
		{"a negative offset", cfg{"step_id": "files", "path": "report.txt", "offset": -1, "length": 7}},
		{"a negative length", cfg{"step_id": "files", "path": "report.txt", "offset": 0, "length": -7}},
	} {
		c.callError("§5.5", "fetch_artifact of "+x.what, tproxy.CodeInvalidParams, tproxy.MethodFetchArtifact, x.params)
	}
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// fetch reads artifact a of stepID in chunks of chunk bytes (0: the
// worker's 1 MiB) and checks the bytes against its listed size and
// SHA-256 (§5.5, §10).
func (c *checkRun) fetch(stepID string, a artifact, chunk int) []byte {
	var data []byte
	for calls := 1; ; calls++ {
		what := fmt.Sprintf("fetch_artifact of %q at offset %d", a.path, len(data))
		f, _ := c.call("§5.5", tproxy.MethodFetchArtifact, cfg{"step_id": stepID, "path": a.path, "offset": len(data), "length": chunk})
		r := c.result("§5.5", f, what)
		b, err := base64.StdEncoding.Strict().DecodeString(r.str("data"))
		if err != nil {
			c.failf("§5.5", "%s: data is not standard base64 with padding: %v", what, err)
		}
		eof := r.boolean("eof")
		switch {
		case chunk > 0 && len(b) > chunk:
			c.failf("§5.5", "%s: %d bytes for a length of %d", what, len(b), chunk)
		case len(b) > tproxy.DefaultArtifactChunk:
			c.failf("§5.5", "%s: %d bytes, over 1 MiB", what, len(b))
		case len(b) == 0 && !eof:
			c.failf("§5.5", "%s: an empty chunk without eof", what)
		}
		data = append(data, b...)
		if int64(len(data)) > a.size {
			c.failf("§10", "artifact %q: fetched %d bytes or more; it is listed with %d", a.path, len(data), a.size)
		}
		if eof {
			break
		}
		if int64(len(data)) == a.size {
			c.failf("§5.5", "%s: the chunk reaches the end of the %d-byte file, but eof is false; eof is true when the chunk reaches the end of the file", what, a.size)
		}
		if calls > int(a.size)+2 {
			c.failf("§5.5", "artifact %q: %d chunks without eof for a %d-byte file", a.path, calls, a.size)
		}
	}
	if int64(len(data)) != a.size {
		c.failf("§10", "artifact %q: fetched %d bytes to eof; it is listed with %d", a.path, len(data), a.size)
	}
	if sum := sha(string(data)); sum != a.sha256 {
		c.failf("§10", "artifact %q: the fetched bytes' sha256 is %s; it is listed with %s", a.path, sum, a.sha256)
	}
	return data
}

func checkIntegerNotation(c *checkRun) {
	c.start()
	f, _ := c.call("§3", tproxy.MethodPing, raw(`{"data":"notation","protocol":1.0}`))
	if f.err != nil {
		c.failf("§3", "ping with protocol 1.0 was answered %s; an integer is accepted in any notation", f.err)
	}
	c.pong(f, "notation")
	files := cfg{"files": cfg{"n.txt": "0123456789"}}
	c.prepare("conform-notation", step("ticks", driverEmit, cfg{"events": 2}), step("files", driverArtifacts, files))
	f, notes := c.await("§3", c.send(tproxy.MethodExecStep, raw(`{"step_id":"ticks","driver":"conform.emit","config":{"events":2.0}}`)))
	res := c.stepResult(f, "ticks", driverEmit)
	if n := count(notes, isEvent(tickEvent, "ticks")); n != 2 || res.rows != 2 {
		c.failf("§3", "conform.emit with events 2.0 emitted %d events and %d rows; want 2", n, res.rows)
	}
	c.execOK("§3", "files", driverArtifacts, files, nil)
	var got []byte
	for _, p := range []string{`"offset":0.0,"length":4e0`, `"offset":4E0,"length":6.0`} {
		f, _ := c.call("§3", tproxy.MethodFetchArtifact, raw(`{"step_id":"files","path":"n.txt",`+p+`}`))
		r := c.result("§3", f, "fetch_artifact with "+p)
		b, _ := base64.StdEncoding.DecodeString(r.str("data"))
		got = append(got, b...)
		if r.boolean("eof") {
			break
		}
	}
	if string(got) != "0123456789" {
		c.failf("§3", "fetch_artifact with offsets and lengths 0.0, 4e0, 4E0, 6.0 read %q; want %q", got, "0123456789")
	}
}

func checkStrayStdout(c *checkRun) {
	c.startPinged()
	config := cfg{"text": "conform: stray text on stdout, which must not reach the protocol channel"}
	c.prepare("conform-stdout", step("noisy", driverStdout, config))
	c.execOK("§2", "noisy", driverStdout, config, nil)
	c.ping("conform-after-stdout")
}

func checkCleanup(c *checkRun) {
	c.startPinged()
	const session = "conform-cleanup"
	counted, fails := cfg{"events": 2}, cfg{"message": "conform: fails before cleanup"}
	c.prepare(session, step("counted", driverEmit, counted), step("broken", driverFail, fails))
	c.execOK("§5.3", "counted", driverEmit, counted, nil)
	f, _ := c.await("§5.3", c.exec("broken", driverFail, fails, nil))
	c.wantError("§5.3", f, "exec_step of a failing step", tproxy.CodeStepFailed)

	f, notes := c.call("§5.4", tproxy.MethodCleanup, cfg{})
	r := c.result("§5.4", f, "cleanup")
	if st := r.str("status"); st != "cleaned" {
		c.failf("§5.4", `cleanup result: status is %q, not "cleaned"`, st)
	}
	if id := r.id("session_id"); id != session {
		c.failf("§5.4", "cleanup result: session_id is %q; want %q", id, session)
	}
	if n := r.integer("steps_executed"); n != 1 {
		c.failf("§5.4", "cleanup result: steps_executed is %d; want 1, the steps that completed successfully", n)
	}
	if n, ok := r.optInteger("total_rows"); ok && n != 2 {
		c.failf("§5.4", "cleanup result: total_rows is %d; want 2", n)
	}
	i := find(notes, isEvent("session_cleanup", ""))
	if i < 0 {
		c.failf("§9", "no session_cleanup event before cleanup's result")
	}
	d := c.data("§9", notes[i])
	if id := d.id("session_id"); id != session {
		c.failf("§9", "session_cleanup: data.session_id is %q; want %q", id, session)
	}
	if n := d.integer("steps_executed"); n != 1 {
		c.failf("§9", "session_cleanup: data.steps_executed is %d; want 1", n)
	}
	if n := d.integer("total_rows"); n != 2 {
		c.failf("§9", "session_cleanup: data.total_rows is %d; want 2", n)
	}

	c.callError("§7", "exec_step after cleanup", tproxy.CodeNotPrepared, tproxy.MethodExecStep,
		tproxy.ExecStepParams{StepID: "counted", Driver: driverEmit, Config: counted})
	c.callError("§7", "a second cleanup", tproxy.CodeNotPrepared, tproxy.MethodCleanup, nil)
	c.callError("§7", "fetch_artifact after cleanup", tproxy.CodeNotPrepared, tproxy.MethodFetchArtifact,
		tproxy.FetchArtifactParams{StepID: "counted", Path: "cleaned_config.json", Offset: 0, Length: 0})
	c.ping("conform-after-cleanup")
}

func checkEOFExit(c *checkRun) {
	c.startPinged()
	slow := cfg{"ms": 30000}
	c.prepare("conform-eof", step("last", driverSleep, slow), step("queued", driverEmit, cfg{"events": 1}))
	running := c.exec("last", driverSleep, slow, nil)
	notes := c.waitEvent("§9", "step_start", "last", running)
	queued := c.exec("queued", driverEmit, cfg{"events": 1}, nil)
	c.w.p.CloseWrite()
	closed := time.Now()
	for left := []request{running, queued}; len(left) > 0; {
		f, more := c.awaitFor("§8", "-32800 for the requests in flight at the end of the input", left...)
		notes = append(notes, more...)
		i := slices.IndexFunc(left, func(r request) bool { return r.key == idKey(f.id) })
		if f.err == nil || f.err.code != tproxy.CodeRequestCancelled {
			c.failf("§8", "at the end of its input the worker answered %s %s after %s; want -32800: the end of the input cancels it", left[i], errText(f), since(closed))
		}
		left = slices.Delete(left, i, i+1)
	}
	d := c.failed(notes, "last", driverSleep, 1)
	if t := d.str("error_type"); t != "cancelled" {
		c.failf("§9", `step_failed of the step cancelled by the end of the input: data.error_type is %q; want "cancelled"`, t)
	}
	if i := find(notes, isEvent("step_start", "queued")); i >= 0 {
		c.failf("§8", "the exec_step queued at the end of the input ran (step_start of step %q); it is answered -32800 without running", "queued")
	}
	for {
		f, eof := c.recv("§8", "the end of the worker's output after the end of its input")
		if eof {
			break
		}
		if f.method == "" {
			c.unexpected(f)
		}
	}
	timer := time.NewTimer(time.Until(c.deadline))
	defer timer.Stop()
	select {
	case <-c.w.p.Done():
	case <-timer.C:
		c.failf("§8", "the worker ended its output but did not exit within %s of the end of its input", since(closed))
	case <-c.ctx.Done():
		c.fail("interrupted: " + c.ctx.Err().Error())
	}
	if st := c.w.p.Exit(); !st.Success() {
		c.failf("§8", "at the end of its input the worker exited with %s; want exit status 0", st)
	}
}
