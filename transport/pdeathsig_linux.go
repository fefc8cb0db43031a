package transport

import (
	"runtime"
	"syscall"
)

// parentDeathSignal is the signal a worker started by Subprocess gets when
// the host dies without running the shutdown ladder (SIGKILL, a crash, an
// unhandled signal, os.Exit). SIGTERM rather than SIGKILL: it is the
// ladder's own second rung, and a tproxy runtime answers it by cancelling
// the step in flight, removing its session directory and ending the
// processes its drivers started, none of which a SIGKILLed worker can do.
// A program that ignores SIGTERM outlives its host; it still sees the end
// of its stdin.
const parentDeathSignal = syscall.SIGTERM

// setParentDeath makes the worker get parentDeathSignal when its parent
// dies (prctl PR_SET_PDEATHSIG, set between fork and exec).
func setParentDeath(attr *syscall.SysProcAttr) { attr.Pdeathsig = parentDeathSignal }

// lockStartThread locks the calling goroutine to its OS thread, and the
// returned function unlocks it. The kernel sends the parent-death signal
// when the thread that forked the child exits, not the process: Go ends
// a thread when a goroutine locked to it returns without unlocking, so
// any goroutine that later ran on the forking thread could otherwise kill
// the worker by mistake. The thread is kept, locked, by the goroutine that
// waits for the worker, which holds a thread in waitid(2) all along
// anyway, so this costs no extra thread.
func lockStartThread() (unlock func()) {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}
