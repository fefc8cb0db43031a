//go:build linux

package transport_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy/internal/proctest"
	"golang.org/x/sys/unix"
)

// TestSubprocess_WorkerGetsSIGTERMWhenHostDies: a host killed with SIGKILL
// runs no shutdown ladder; its worker gets the parent-death signal
// (SIGTERM) and, not handling it, dies. The wait is a hang guard.
func TestSubprocess_WorkerGetsSIGTERMWhenHostDies(t *testing.T) {
	h := childCommand("host-of-sleep")
	h.Stderr = os.Stderr
	out, err := h.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	defer h.Wait()
	defer h.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the host said %q: %v", line, err)
	}
	worker, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(worker, syscall.SIGKILL) })
	killed := time.Now()
	h.Process.Kill()
	for !proctest.Exited(worker) {
		if time.Since(killed) > 10*time.Second {
			t.Fatal("the worker is still running 10 s after its host was killed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the worker died %v after its host", time.Since(killed))
}

// TestSubprocess_ParentDeathSignalOutlivesTheStartingThread: the kernel
// sends the parent-death signal when the thread that forked the worker
// exits. A goroutine that locks its thread, starts a worker and returns
// ends that thread; the worker must live on.
func TestSubprocess_ParentDeathSignalOutlivesTheStartingThread(t *testing.T) {
	type started struct {
		tid int
		err error
	}
	ch := make(chan started, 1)
	var p interface {
		Write([]byte) (int, error)
		Read([]byte) (int, error)
		Done() <-chan struct{}
		Close() error
	}
	var st started
	for st.tid == 0 {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			if unix.Gettid() == os.Getpid() {
				// The main thread is never ended, only wedged: try
				// another.
				runtime.UnlockOSThread()
				ch <- started{}
				return
			}
			proc, err := child(t, "echo").Start(context.Background())
			if err == nil {
				p = proc
			}
			ch <- started{unix.Gettid(), err}
		}()
		st = <-ch
	}
	if st.err != nil {
		t.Fatal(st.err)
	}
	defer p.Close()
	task := fmt.Sprintf("/proc/self/task/%d", st.tid)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := os.Stat(task); err != nil {
			break // the thread is gone
		}
		if time.Now().After(deadline) {
			t.Fatalf("the locked thread %d (pid %d) did not end with its goroutine", st.tid, os.Getpid())
		}
	}
	r := bufio.NewReader(p)
	for i := range 3 {
		msg := fmt.Sprint("still here ", i)
		if _, err := fmt.Fprintln(p, msg); err != nil {
			t.Fatalf("the worker died with the thread that started it: %v", err)
		}
		if got, err := r.ReadString('\n'); err != nil || strings.TrimSpace(got) != msg {
			t.Fatalf("the worker died with the thread that started it: %q, %v", got, err)
		}
	}
	select {
	case <-p.Done():
		t.Fatal("the worker exited")
	default:
	}
}
