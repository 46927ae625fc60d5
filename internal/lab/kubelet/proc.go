package kubelet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one running container: `ip netns exec <ns> Self pod-run <program> args...` in its own
// process group, so signals reach whatever the program starts.
type proc struct {
	cmd      *exec.Cmd
	pidFile  string
	started  time.Time
	done     chan struct{} // closed when the process has exited; then code and finished are set
	code     int32
	finished time.Time
}

func startProc(netns, self, program string, args, env []string, logPath, pidFile string) (*proc, error) {
	argv := append([]string{"netns", "exec", netns, self, "pod-run", program}, args...)
	cmd := exec.Command("ip", argv...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening container log: %w", err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	fmt.Fprintf(logf, "--- %s starting %s %s\n", time.Now().UTC().Format(time.RFC3339), program, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", program, err)
	}
	p := &proc{cmd: cmd, pidFile: pidFile, started: time.Now(), done: make(chan struct{})}
	// The pid file lets a later run kill this process if the kubelet dies without stopping it.
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		p.signal(syscall.SIGKILL)
		_ = cmd.Wait()
		return nil, fmt.Errorf("writing pid file: %w", err)
	}
	go func() {
		_ = cmd.Wait()
		st := cmd.ProcessState
		p.code = int32(st.ExitCode())
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.code = 128 + int32(ws.Signal())
		}
		p.finished = time.Now()
		os.Remove(pidFile)
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// signal sends sig to the container's process group.
func (p *proc) signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.pid(), sig)
}

// killLeftovers kills the process groups whose pid files an earlier run left in dir, if they
// still are lab containers, and removes the files.
func killLeftovers(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.pid"))
	if err != nil {
		return fmt.Errorf("listing pid files: %w", err)
	}
	var errs []error
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && isContainer(pid) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			waitGone(pid)
		}
		if err := os.Remove(f); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// isContainer reports whether pid runs `pod-run`, so a recycled pid of another program is spared.
func isContainer(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte("\x00pod-run\x00"))
}

func waitGone(pid int) {
	for range 50 {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
