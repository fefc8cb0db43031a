package worker

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// parentDeathSignal is what a worker process asks the kernel to send it
// when its parent dies, if whoever started it asked for nothing
// (transport.Subprocess asks for SIGTERM). Not SIGTERM itself: the kernel
// sends it when the *thread* that started the worker exits, which a host
// in any language may do while it lives on (a thread pool's worker
// thread, say), so the runtime checks that its parent really is gone
// before it takes the signal for the host's death; a SIGTERM is obeyed
// unconditionally.
const parentDeathSignal = syscall.SIGHUP

// armParentDeath sets the process's parent-death signal to
// parentDeathSignal unless one is set already, and reports whether it
// did: the caller then handles that signal.
func armParentDeath() bool {
	var cur int32
	if err := unix.Prctl(unix.PR_GET_PDEATHSIG, uintptr(unsafe.Pointer(&cur)), 0, 0, 0); err != nil || cur != 0 {
		return false
	}
	return unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(parentDeathSignal), 0, 0, 0) == nil
}

// procStat is what endChildren needs of /proc/<pid>/stat.
type procStat struct {
	pid, ppid, pgrp int
	state           byte
	flags           uint64 // the kernel's PF_* flags
}

// pfExiting is the kernel's PF_EXITING: the process is in exit(2), set
// before its file descriptors are closed.
const pfExiting = 0x4

// readStat parses /proc/<pid>/stat. The command name, in parentheses, may
// hold spaces and parentheses itself: the fields start after the last ')'.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := bytes.Fields(b[i+1:]) // from field 3, state
	if len(f) < 7 || len(f[0]) != 1 {
		return procStat{}, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	flags, err3 := strconv.ParseUint(string(f[6]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, false
	}
	return procStat{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0], flags: flags}, true
}

// parentAlive reports whether ppid is still this process's parent and is
// not exiting. A parent killed by SIGKILL closes its end of the worker's
// stdin before the kernel reparents the worker, so the end of the input
// may be read while getppid still names the dying parent: its PF_EXITING
// flag, set before its descriptors are closed, tells.
func parentAlive(ppid int) bool {
	if os.Getppid() != ppid {
		return false
	}
	st, ok := readStat(ppid)
	return ok && st.state != 'Z' && st.state != 'X' && st.flags&pfExiting == 0
}

// endChildren kills, with SIGKILL, the processes the worker's drivers
// left running: the worker's children and, when the worker leads its
// process group (as transport.Subprocess starts it), every other member of
// the group, wherever it was reparented. A process that left the group
// and is no child of the worker (setsid, a double fork) is out of reach:
// that is what daemonizing asks for.
//
// A worker that leads its own group while its parent, which ppid was at
// start, is alive and not exiting leaves this to that parent:
// transport.Subprocess kills the group once the worker has exited, and
// the scan below reads /proc for every process on the machine. When the
// parent is dying or dead (its death is what stopped the worker) nobody
// else can, and a worker in someone else's group (a host that made none)
// ends its own children.
//
// It scans /proc, a few rounds so that a process forked while a round
// killed its parent is caught by the next, and returns once a round finds
// nothing alive or after about 100 ms.
func endChildren(log *slog.Logger, ppid int) {
	self := os.Getpid()
	leader := syscall.Getpgrp() == self
	if leader && parentAlive(ppid) {
		return
	}
	killed := 0
	for round := range 5 {
		alive := 0
		for _, p := range scanProcs() {
			if p.pid == self || p.state == 'Z' || p.state == 'X' {
				continue
			}
			if p.ppid != self && !(leader && p.pgrp == self) {
				continue
			}
			alive++
			if killProc(p, self, leader) {
				killed++
			}
		}
		if alive == 0 {
			break
		}
		time.Sleep(time.Duration(round+1) * 5 * time.Millisecond) // let the kills land
	}
	if killed > 0 {
		log.Info("tproxy/worker: killed the processes drivers left running", "processes", killed)
	}
}

// scanProcs returns every process in /proc.
func scanProcs() []procStat {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var out []procStat
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			out = append(out, st)
		}
	}
	return out
}

// killProc sends SIGKILL to p. Through a pidfd when the kernel has them:
// the process is checked again once the pidfd pins it, so that a pid
// reused since the scan is never signalled.
func killProc(p procStat, self int, leader bool) bool {
	fd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
			return unix.Kill(p.pid, unix.SIGKILL) == nil
		}
		return false // gone
	}
	defer unix.Close(fd)
	st, ok := readStat(p.pid)
	if !ok || st.ppid != self && !(leader && st.pgrp == self) {
		return false
	}
	return unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil
}
