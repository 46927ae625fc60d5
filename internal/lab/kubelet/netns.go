package kubelet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"
)

// netnsDir is where `ip netns` keeps named namespaces.
const netnsDir = "/run/netns"

// podNetns names a pod's network namespace.
func podNetns(prefix, node string, uid types.UID) string {
	return prefix + node + "-" + shortHash(string(uid))
}

// hostVeth names the node side of a pod's veth: unique per node, within the 15-byte limit.
func hostVeth(uid types.UID) string { return "veth" + shortHash(string(uid))[:11] }

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sandbox is a pod's network: a namespace with eth0 on the node's pod bridge, the pod's addresses and
// default routes via the bridge's gateway addresses.
type sandbox struct {
	nodeNetns, bridge, name, veth string
	ips                           []netip.Addr
	cidrs                         []netip.Prefix
}

func (s *sandbox) create(ctx context.Context) error {
	// A namespace of the same name is a leftover of this pod from a crashed run.
	_ = s.remove(ctx)
	if err := ip(ctx, "netns", "add", s.name); err != nil {
		return err
	}
	steps := [][]string{
		{"-n", s.nodeNetns, "link", "add", s.veth, "type", "veth", "peer", "name", "eth0", "netns", s.name},
		{"-n", s.nodeNetns, "link", "set", s.veth, "master", s.bridge, "up"},
		{"-n", s.name, "link", "set", "lo", "up"},
	}
	for i, addr := range s.ips {
		cidr := s.cidrs[i]
		a := []string{"-n", s.name, "addr", "add", netip.PrefixFrom(addr, cidr.Bits()).String(), "dev", "eth0"}
		if addr.Is6() {
			// Duplicate address detection would hold the address back for a second or more; the
			// allocator already guarantees uniqueness on this bridge.
			a = append(a, "nodad")
		}
		steps = append(steps, a)
	}
	steps = append(steps, []string{"-n", s.name, "link", "set", "eth0", "up"})
	for i, addr := range s.ips {
		gw := s.cidrs[i].Masked().Addr().Next()
		fam := "-4"
		if addr.Is6() {
			fam = "-6"
		}
		steps = append(steps, []string{"-n", s.name, fam, "route", "add", "default", "via", gw.String(), "dev", "eth0"})
	}
	for _, st := range steps {
		if err := ip(ctx, st...); err != nil {
			_ = s.remove(context.Background())
			return fmt.Errorf("setting up pod network %s: %w", s.name, err)
		}
	}
	return nil
}

// remove kills what still runs in the namespace and deletes it; the veth pair goes with it.
func (s *sandbox) remove(ctx context.Context) error {
	return removeNetns(ctx, s.name)
}

func removeNetns(ctx context.Context, name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := killNetnsProcesses(ctx, name); err != nil {
		return err
	}
	return ip(ctx, "netns", "del", name)
}

// killNetnsProcesses SIGKILLs every process in a named namespace and waits until they are gone.
func killNetnsProcesses(ctx context.Context, name string) error {
	for range 50 {
		out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output()
		if err != nil {
			return fmt.Errorf("listing processes in %s: %w", name, err)
		}
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("processes in network namespace %s survive SIGKILL", name)
}

// Cleanup removes every pod network namespace whose name starts with prefix, and the processes in
// them: what a crashed lab left behind.
func Cleanup(prefix string) error {
	if prefix == "" {
		return errors.New("cleanup needs a namespace prefix")
	}
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing network namespaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			if err := removeNetns(context.Background(), e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// dialFrom returns a dialer whose sockets live in the named network namespace: the kubelet probes
// pods from the node's namespace, as a kubelet probes from its host.
func dialFrom(netns string) dialFunc {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			return nil, fmt.Errorf("opening own network namespace: %w", err)
		}
		defer self.Close()
		target, err := os.Open(filepath.Join(netnsDir, netns))
		if err != nil {
			runtime.UnlockOSThread()
			return nil, fmt.Errorf("opening network namespace %s: %w", netns, err)
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			return nil, fmt.Errorf("entering network namespace %s: %w", netns, err)
		}
		conn, dialErr := d.DialContext(ctx, network, addr)
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime retires it with this goroutine.
			if conn != nil {
				conn.Close()
			}
			return nil, fmt.Errorf("returning from network namespace %s: %w", netns, err)
		}
		runtime.UnlockOSThread()
		return conn, dialErr
	}
}
