package e2b_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tproxy/tproxy/host"
	"github.com/tproxy/tproxy/internal/e2bfake"
	"github.com/tproxy/tproxy/transport/e2b"
)

// A host drives a worker in an E2B sandbox exactly as it drives a local
// one. Here the sandbox is the local E2B of package e2bfake; against
// e2b.dev, leave APIURL and EnvdURL empty and set E2B_API_KEY.
func ExampleE2B() {
	srv, err := e2bfake.New(e2bfake.Options{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	worker, _ := os.Executable() // this test binary is also the worker (see TestMain)
	tr := &e2b.E2B{
		APIKey:   srv.APIKey(),
		APIURL:   srv.URL,
		EnvdURL:  srv.URL,
		Binary:   worker,
		Env:      childEnv("worker"), // an explicit allow-list: nothing else is forwarded
		Metadata: map[string]string{"session": "example"},
	}
	ctx := context.Background()
	c, err := host.Start(ctx, tr)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	pong, err := c.Ping(ctx, "hello from the host")
	if err != nil {
		panic(err)
	}
	fmt.Println(pong.Echo, "-", c.Worker().Worker.Name)
	info, _ := e2b.InfoOf(c.Process())
	fmt.Println("worker:", info.Worker)
	if err := c.Close(); err != nil {
		panic(err)
	}
	fmt.Println("exit:", c.Process().Exit())
	// Output:
	// hello from the host - tproxy-demo
	// worker: uploaded
	// exit: exit status 0
}

// Sweep kills the sandboxes that hosts which crashed before closing their
// workers left behind, by tag and age.
func ExampleE2B_Sweep() {
	srv, err := e2bfake.New(e2bfake.Options{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	orphan, _ := srv.CreateSandbox("base", time.Hour, map[string]string{e2b.TagKey: e2b.TagValue})
	srv.SetStartedAt(orphan, time.Now().Add(-2*time.Hour))

	tr := &e2b.E2B{APIKey: srv.APIKey(), APIURL: srv.URL}
	killed, err := tr.Sweep(context.Background(), e2b.ListOptions{OlderThan: time.Hour})
	if err != nil {
		panic(err)
	}
	fmt.Println(len(killed), killed[0] == orphan, len(srv.Sandboxes()))
	// Output: 1 true 0
}
