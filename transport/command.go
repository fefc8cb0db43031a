package transport

import (
	"fmt"
	"syscall"
)

// Command returns a [Subprocess] that reaches the worker through a command
// whose stdin and stdout end up at the worker's: a remote shell, a
// container runtime, a cluster's exec, a wrapper script. Everything else is
// Subprocess's: the process group, the stderr capture and tail, the close
// ladder, Kill.
//
//	transport.Command("ssh", "-T", "-o", "BatchMode=yes", "worker-host", "/usr/local/bin/tproxy-worker")
//	transport.Command("kubectl", "exec", "-i", "-n", "etl", "pod/worker-0", "--", "/worker")
//	transport.Command("docker", "exec", "-i", "etl-worker", "/worker")
//
// The Process's Pid is the intermediary's, the leader of the local process
// group. name is looked up in PATH as by [exec.Command]; the fields of the
// returned Subprocess (Env, Dir, Stderr, Logger, TailSize, CloseTimeout,
// TermTimeout) may be set before the first Start. Unlike a plain
// Subprocess, it has InheritEnv set: the intermediary needs the host's
// environment (SSH_AUTH_SOCK, KUBECONFIG, DOCKER_HOST), and ssh, kubectl
// exec and docker exec pass none of it to the remote worker unless told
// to. Clear InheritEnv for a local intermediary (sh -c, env, nice) whose
// worker would otherwise see everything.
//
// What travels through the extra layer, and what does not:
//
//   - Bytes: the intermediary's stdin, stdout and stderr are the worker's,
//     relayed. The worker's stderr reaches StderrTail, Stderr and Logger
//     mixed with the intermediary's own messages (ssh's "Connection
//     refused", kubectl's "error: ..."), which is what explains a failed
//     start.
//   - Closing stdin, the close ladder's first rung along with no longer
//     reading stdout, is relayed by all three (ssh -T, kubectl exec -i,
//     docker exec -i close the remote stdin), and a tproxy worker exits on
//     stdin EOF, cancelling the call in flight and answering it as
//     cancelled if it still can. This is the rung that
//     reaches a remote worker, and also what a remote worker sees when the
//     host dies: the parent-death signal (see Subprocess) reaches only the
//     local intermediary, whose end then drops the connection.
//   - SIGTERM and SIGKILL go to the local process group: the intermediary
//     and whatever it runs locally. An intermediary that execs the worker
//     (sh -c 'exec worker', env, nice, timeout in the foreground) is
//     transparent; a shell that forks it gets the signal along with the
//     worker, since both are in the group. For a remote worker, killing
//     the local client drops the connection: the remote side sees stdin
//     EOF and a broken stdout, but no signal (docker and kubectl do not
//     forward a killed client's signal into the container), so a remote
//     worker that ignores stdin EOF must be bounded there (for example
//     with timeout(1) in the remote command line). On Windows, which has
//     neither process groups nor SIGTERM, only the intermediary is killed
//     (see Subprocess).
//   - Exit status: an intermediary that execs the worker reports the
//     worker's own status. A layer that forks it (a shell running
//     "worker; exit $?", docker exec, kubectl exec) reports a worker
//     killed by signal N as exit status 128+N; with ExitCodeSignals set,
//     which Command does, such a status is decoded back to Signal N with a
//     Reason saying it was decoded, so that a worker killed by SIGKILL
//     shows "signal: killed" as it would locally. The price: a worker that
//     itself exits with a code above 128 is reported as a signal. ssh
//     reports a remote worker killed by a signal as 255, the same status
//     as its own connection failures; that is left as exit status 255, and
//     the stderr tail holds ssh's explanation, if any. Behind a forking
//     layer, Exit is always the layer's: if the ladder's SIGTERM ends the
//     shell but not a worker that ignores it, the worker dies with the
//     group once the shell has exited, and Exit says SIGTERM.
func Command(name string, arg ...string) *Subprocess {
	return &Subprocess{Path: name, Args: arg, ExitCodeSignals: true, InheritEnv: true}
}

// maxSignal is the largest signal number decoded from a 128+N status.
const maxSignal = 64

// decodeSignalExit turns the 128+N exit status of a layer that reports a
// child killed by signal N into that signal. A status that is already a
// signal, or a code outside 129..128+maxSignal, is returned as is.
func decodeSignalExit(s ExitStatus, layer string) ExitStatus {
	if s.Signal != 0 || s.Code <= 128 || s.Code > 128+maxSignal {
		return s
	}
	return ExitStatus{
		Code:   -1,
		Signal: syscall.Signal(s.Code - 128),
		Reason: fmt.Sprintf("%s exited with status %d, decoded as signal %d", layer, s.Code, s.Code-128),
	}
}
