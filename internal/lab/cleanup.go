package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LabNetns lists the network namespaces of lab id: its hosts, its LAN and its pods.
func LabNetns(ctx context.Context, id string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing network namespaces: %w", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], id+"-") {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// Cleanup removes every namespace of lab id with the processes in them, as left by a crashed run or
// before `down` returns. Links die with their namespaces.
func Cleanup(ctx context.Context, id string) error {
	names, err := LabNetns(ctx, id)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range names {
		killNetnsProcesses(ctx, ns)
	}
	for _, ns := range names {
		if err := ipCmd(ctx, "", "netns", "delete", ns); err != nil {
			// A dying lab's kubelet may remove its pods' namespaces while we list and delete.
			if _, statErr := os.Stat("/run/netns/" + ns); errors.Is(statErr, os.ErrNotExist) {
				continue
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killNetnsProcesses SIGKILLs what runs in ns and waits a little for it to be gone, so the namespace
// is really freed when it is deleted.
func killNetnsProcesses(ctx context.Context, ns string) {
	for range 50 {
		out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
		if err != nil {
			return
		}
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ProcessesMentioning lists "pid: command line" of every process whose command line contains s (such as
// a lab's state directory), to prove that a lab left nothing running.
func ProcessesMentioning(s string) ([]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	var found []string
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), s) {
			found = append(found, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return found, nil
}
