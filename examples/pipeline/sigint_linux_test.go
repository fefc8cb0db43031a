package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tproxy/tproxy/host"
)

// TestSIGINT interrupts the example mid-step: it cancels the step, cleans
// up, stops the worker, writes status.json and exits non-zero.
func TestSIGINT(t *testing.T) {
	tmp := t.TempDir()
	data := filepath.Join(tmp, "big.csv")
	b := []byte("order_id,region,product,quantity,unit_price,status\n")
	for i := range 1_000_000 {
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, ",north,widget,2,4.25,shipped\n"...)
	}
	if err := os.WriteFile(data, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "session")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), mainEnv+"=-data\n"+data+"\n-dir\n"+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "rows read") {
			break
		}
	}
	workers := children(t, cmd.Process.Pid)
	if len(workers) == 0 {
		t.Fatal("the example has no worker process mid-step")
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	go func() {
		for sc.Scan() {
		}
		done <- cmd.Wait()
	}()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the example did not exit after SIGINT")
	}
	var xe *exec.ExitError
	if err == nil || !errors.As(err, &xe) || xe.ExitCode() == 0 {
		t.Errorf("exit: %v, want a non-zero exit code", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, host.StatusFile))
	if err != nil {
		t.Fatal(err)
	}
	var st host.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if st.Outcome != host.OutcomeCancelled || st.Failure == nil || st.Failure.StepID != "extract" {
		t.Errorf("status.json: outcome %s, failure %+v", st.Outcome, st.Failure)
	}
	for _, pid := range workers {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("worker process %d still exists after the example exited", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// children lists the child processes of pid, whichever of its threads
// started them (Linux).
func children(t *testing.T, pid int) []int {
	t.Helper()
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil || len(files) == 0 {
		t.Fatalf("cannot list the child processes of %d: %v", pid, err)
	}
	var pids []int
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(field); err == nil {
				pids = append(pids, n)
			}
		}
	}
	return pids
}
