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
// reaches events.jsonl, metrics.jsonl, status.json or the error the run
// returns in a form that gives the secret back.
func TestRunMasksQuotedSecrets(t *testing.T) {
	w := worker.New("secretforms", "1")
	w.RegisterFunc("quote", func(ctx context.Context, s *worker.Step) error {
		secret, _ := s.Config()["password"].(string)
		_, perr := url.Parse("http://host/" + secret)
		_, aerr := strconv.Atoi(secret)
		s.Event("ev_"+secret, map[string]any{"k_" + secret: 1, "b": []byte("x" + secret), "q": url.QueryEscape(secret)})
		s.Metric("m_"+secret, 1, worker.Unit("u_"+secret))
		s.Logger().Info("log", "a_"+secret, fmt.Sprintf("%q", secret))
		return fmt.Errorf("open %q: %v; %v", secret, perr, aerr)
	})
	dir := filepath.Join(t.TempDir(), "s")
	m := tproxy.Manifest{Steps: []tproxy.StepSpec{{ID: "q", Driver: "quote", Config: map[string]any{"password": quotedSecret}}}}
	_, err := run(t, t.Context(), &transport.InMemory{Serve: w.Serve}, host.RunSpec{Dir: dir, Manifest: m,
		Options: []host.Option{host.WithLogger(slog.New(slog.DiscardHandler))}})
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

func jsonInner(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}
