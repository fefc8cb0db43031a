package host_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tproxy/tproxy"
	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
	"github.com/tproxy/tproxy/worker"
)

// quotedSecret has what makes quoting change a text: a quote, a
// backslash, a control character.
const quotedSecret = "Se\"cr\\et\x01Value<12345>"

// TestRunMasksQuotedSecrets: items 9 and 11 of issue 13, end to end. A
// driver quotes its config's secret the ways error messages do (%q,
// url.Parse, strconv) and encodes it (base64 []byte, URL escaping), and
// puts it in event names, data keys, metric names and units; none of it
// reaches events.jsonl, metrics.jsonl, logs.jsonl, status.json, the
// caller's logger or the error the run returns in a form that gives the
// secret back.
func TestRunMasksQuotedSecrets(t *testing.T) {
	w := worker.New("secretforms", "1")
	w.RegisterFunc("quote", func(ctx context.Context, s *worker.Step) error {
		secret, _ := s.Config()["password"].(string)
		_, perr := url.Parse("http://host/" + secret)
		_, aerr := strconv.Atoi(secret)
		s.Event("ev_"+secret, map[string]any{"k_" + secret: 1, "b": []byte("x" + secret), "q": url.QueryEscape(secret)})
		s.Metric("m_"+secret, 1, worker.Unit("u_"+secret))
		s.Logger().Info("log "+secret, "a_"+secret, fmt.Sprintf("%q", secret), "err", perr, "password", "x"+secret,
			slog.Group("g", "v", secret))
		return fmt.Errorf("open %q: %v; %v", secret, perr, aerr)
	})
	dir := filepath.Join(t.TempDir(), "s")
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "q", Driver: "quote", Config: map[string]any{"password": quotedSecret}}}}
	var text, js syncBuffer
	logger := slog.New(teeLog{slog.NewTextHandler(&text, &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewJSONHandler(&js, &slog.HandlerOptions{Level: slog.LevelDebug})})
	_, err := run(t, t.Context(), &transport.InMemory{Serve: wiretest.Serve(t, w.Serve, wiretest.Both)}, host.RunSpec{Dir: dir, Manifest: m, LogLevel: "debug",
		Options: []host.Option{host.WithLogger(logger)}})
	if err == nil {
		t.Fatal("the failing step did not fail the run")
	}
	forms := map[string]string{
		"raw":        quotedSecret,
		"%q":         strconv.Quote(quotedSecret)[1 : len(strconv.Quote(quotedSecret))-1],
		"json":       jsonInner(quotedSecret),
		"json of %q": jsonInner(strconv.Quote(quotedSecret)[1 : len(strconv.Quote(quotedSecret))-1]),
		"query":      url.QueryEscape(quotedSecret),
		"base64":     base64.StdEncoding.EncodeToString([]byte("x" + quotedSecret))[4:20],
		"tail":       "Value<12345>",
		"json tail":  jsonInner("Value<12345>"),
	}
	places := tree(t, dir)
	places["(error)"] = err.Error()
	places["(caller's text logger)"] = text.String()
	places["(caller's JSON logger)"] = js.String()
	if !strings.Contains(js.String(), `"source":"worker"`) {
		t.Errorf("the driver's record did not reach the caller's logger:\n%s", js.String())
	}
	for where, text := range places {
		for name, f := range forms {
			if strings.Contains(text, f) {
				t.Errorf("%s holds the secret's %s form %q:\n%s", where, name, f, text)
			}
		}
	}
	if !strings.Contains(places["events.jsonl"], tproxy.Masked) || !strings.Contains(places["metrics.jsonl"], tproxy.Masked) {
		t.Error("nothing was masked in events.jsonl or metrics.jsonl: did the driver leak at all?")
	}
}

// teeLog sends every record to two handlers.
type teeLog [2]slog.Handler

func (t teeLog) Enabled(ctx context.Context, l slog.Level) bool { return t[0].Enabled(ctx, l) }
func (t teeLog) Handle(ctx context.Context, r slog.Record) error {
	t[0].Handle(ctx, r.Clone())
	return t[1].Handle(ctx, r)
}
func (t teeLog) WithAttrs(a []slog.Attr) slog.Handler {
	return teeLog{t[0].WithAttrs(a), t[1].WithAttrs(a)}
}
func (t teeLog) WithGroup(n string) slog.Handler { return teeLog{t[0].WithGroup(n), t[1].WithGroup(n)} }

func jsonInner(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

// TestCallerLoggerMasked: the caller's logger gets the worker's log
// records and the host's diagnostics with the session's secrets masked,
// as logs.jsonl does, even from a worker that masks nothing itself.
func TestCallerLoggerMasked(t *testing.T) {
	const secret = "hunter2-Se\"cr\\et"
	q := jsonInner(secret)
	step := func(id string) string {
		return `{"jsonrpc":"2.0","method":"log","params":{"level":"WARN","message":"connect ` + q + `","timestamp":"2026-12-06T16:21:28Z","step_id":"d-step",` +
			`"attrs":{"dsn":"` + q + `","k_` + q + `":1,"nested":{"v":"` + q + `"}}}}` + "\n" +
			// Unusable, so the host warns, quoting it.
			`{"jsonrpc":"2.0","method":"event","params":{"name":"` + q + `"}}` + "\n" +
			stepOK(id)
	}
	var text, js syncBuffer
	logger := slog.New(teeLog{slog.NewTextHandler(&text, &slog.HandlerOptions{Level: slog.LevelDebug}),
		slog.NewJSONHandler(&js, &slog.HandlerOptions{Level: slog.LevelDebug})})
	dir := filepath.Join(t.TempDir(), "s")
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "d-step", Driver: "d", Config: map[string]any{"password": secret}}}}
	if _, err := run(t, t.Context(), scripted("", step), host.RunSpec{Dir: dir, Manifest: m, SessionID: "s1",
		Options: []host.Option{host.WithLogger(logger)}}); err != nil {
		t.Fatal(err)
	}
	places := tree(t, dir)
	places["(caller's text logger)"] = text.String()
	places["(caller's JSON logger)"] = js.String()
	for where, text := range places {
		for _, f := range []string{"hunter2", strconv.Quote(secret), q} {
			if strings.Contains(text, f) {
				t.Errorf("%s holds the secret (%q):\n%s", where, f, text)
			}
		}
	}
	for _, want := range []string{`"source":"worker"`, "protocol"} {
		if !strings.Contains(js.String(), want) {
			t.Errorf("the caller's logger has no %s record:\n%s", want, js.String())
		}
	}
}
