//go:build unix

package transport_test

import (
	"bufio"
	"context"
	"fmt"

	"github.com/tproxy/tproxy/transport"
)

// Command runs the worker behind an intermediary; here a shell that execs
// cat stands in for ssh, kubectl exec or docker exec. Bytes, stdin EOF and
// the exit status travel through.
func ExampleCommand() {
	tr := transport.Command("sh", "-c", `exec "$@"`, "sh", "cat")
	// In production, for example:
	//   transport.Command("ssh", "-T", "worker-host", "/usr/local/bin/tproxy-worker")
	//   transport.Command("kubectl", "exec", "-i", "pod/worker-0", "--", "/worker")
	//   transport.Command("docker", "exec", "-i", "etl-worker", "/worker")
	p, err := tr.Start(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Fprintln(p, `{"jsonrpc":"2.0","method":"ping","id":1}`)
	line, _ := bufio.NewReader(p).ReadString('\n')
	fmt.Print(line)
	p.Close() // stdin EOF: cat exits
	fmt.Println(p.Exit())
	// Output:
	// {"jsonrpc":"2.0","method":"ping","id":1}
	// exit status 0
}
