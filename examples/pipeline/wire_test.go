package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/wiretest"
	"github.com/tproxy/tproxy/transport"
)

// TestPipelineWire runs the example's pipeline, and one whose data is
// missing, over the two transports runPipeline uses, with every frame the
// host and the example's worker write validated against docs/schema.
// runPipeline builds its transports itself, so this test builds the same
// ones, tapped.
func TestPipelineWire(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	transports := map[string]func(t *testing.T) transport.Transport{
		"in-process": func(t *testing.T) transport.Transport {
			w := newWorker()
			w.Logger = slog.New(slog.DiscardHandler)
			return &transport.InMemory{Serve: wiretest.Serve(t, w.Serve, wiretest.Both)}
		},
		"subprocess": func(t *testing.T) transport.Transport {
			env := append(os.Environ(), workerEnv+"=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
			return wiretest.Transport(t, &transport.Subprocess{Path: exe, Env: env}, wiretest.Both)
		},
	}
	for name, tr := range transports {
		for _, data := range []string{"testdata/orders.csv", "testdata/no-such.csv"} {
			t.Run(name+"/"+filepath.Base(data), func(t *testing.T) {
				abs, err := filepath.Abs(data)
				if err != nil {
					t.Fatal(err)
				}
				st, err := host.RunManifest(t.Context(), tr(t), host.RunSpec{
					Dir:      filepath.Join(t.TempDir(), "session"),
					Manifest: manifest(abs),
					Options:  []host.Option{host.WithLogger(slog.New(slog.DiscardHandler))},
				})
				if wantOK := !strings.Contains(data, "no-such"); (err == nil) != wantOK || (st.Outcome == host.OutcomeSuccess) != wantOK {
					t.Fatalf("err %v, outcome %s; want success %v", err, st.Outcome, wantOK)
				}
			})
		}
	}
}
