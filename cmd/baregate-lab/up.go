package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/baregate/baregate/internal/lab"
)

type upFlags struct {
	labFlags
	nodes, clients int
	gateway        bool
	gatewayBinary  string
	gatewayArgs    []string
	detach         bool
	verbose        bool
}

func (f *upFlags) add(fs *pflag.FlagSet) {
	f.labFlags.add(fs)
	fs.IntVar(&f.nodes, "nodes", 2, "Number of nodes (1-9).")
	fs.IntVar(&f.clients, "clients", 1, "Number of client hosts on the LAN (0-19).")
	fs.BoolVar(&f.gateway, "gateway", false, "Run baregate on every node.")
	fs.StringVar(&f.gatewayBinary, "gateway-binary", "", "The baregate binary. Default: bin/baregate beside this binary, else built from the checkout.")
	fs.StringArrayVar(&f.gatewayArgs, "gateway-arg", nil, "An extra flag for every node's baregate (repeatable), e.g. --gateway-arg=--ui.")
	fs.BoolVar(&f.detach, "detach", false, "Return once the lab is up and leave it running; stop it with `baregate-lab down`.")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "Copy the output of the lab's processes to stderr.")
}

func (f *upFlags) options() (lab.Options, error) {
	self, err := os.Executable()
	if err != nil {
		return lab.Options{}, fmt.Errorf("finding this binary: %w", err)
	}
	o := lab.Options{
		ID: f.id, Nodes: f.nodes, Clients: f.clients, Dir: f.stateDir(), Self: self,
		StartGateway: f.gateway, GatewayBinary: f.gatewayBinary, GatewayArgs: f.gatewayArgs,
	}
	if o.StartGateway && o.GatewayBinary == "" {
		// `make build` puts both commands in bin/.
		if p := filepath.Join(filepath.Dir(self), "baregate"); isExecutable(p) {
			o.GatewayBinary = p
		}
	}
	if f.verbose {
		o.Log = os.Stderr
	} else {
		// The kubelets log every container start; keep that beside the state dir, not on the terminal.
		logf, err := os.OpenFile(f.stateDir()+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return o, fmt.Errorf("opening the lab log: %w", err)
		}
		klog.LogToStderr(false)
		klog.SetOutput(logf)
	}
	return o, nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

func cmdUp(ctx context.Context, args []string) error {
	var f upFlags
	fs := pflag.NewFlagSet("up", pflag.ContinueOnError)
	f.add(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.detach {
		return detach(ctx, f, args)
	}
	o, err := f.options()
	if err != nil {
		return err
	}
	l, err := upWithProgress(ctx, o)
	if err != nil {
		return err
	}
	printInfo(os.Stdout, l.Info())
	fmt.Println("\nPress Ctrl-C to stop the lab.")
	<-ctx.Done()
	fmt.Println("\nstopping the lab ...")
	return l.Down()
}

// upWithProgress brings the lab up while telling the user what it waits for.
func upWithProgress(ctx context.Context, o lab.Options) (*lab.Lab, error) {
	fmt.Fprintf(os.Stderr, "bringing up lab %q (%d nodes; the first run builds Kubernetes, a few minutes; log: %s.log) ...\n", o.ID, o.Nodes, o.Dir)
	start := time.Now()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "  ... still starting (%s)\n", time.Since(start).Round(time.Second))
			}
		}
	}()
	l, err := lab.Up(ctx, o)
	close(done)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "lab %q is up after %s\n", o.ID, time.Since(start).Round(100*time.Millisecond))
	return l, nil
}

// detach runs `up` again in its own session, logging to a file, and returns when that lab is up.
func detach(ctx context.Context, f upFlags, args []string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this binary: %w", err)
	}
	var child []string
	for _, a := range args {
		if a != "--detach" && a != "--detach=true" {
			child = append(child, a)
		}
	}
	logPath := f.stateDir() + ".log"
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("creating %s: %w", logPath, err)
	}
	defer logf.Close()
	os.Remove(filepath.Join(f.stateDir(), "lab.json"))
	cmd := exec.Command(self, append([]string{"up"}, child...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the lab in the background: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Fprintf(os.Stderr, "bringing up lab %q in the background (log: %s) ...\n", f.id, logPath)
	for {
		if info, err := lab.ReadInfo(f.stateDir()); err == nil && info.PID == cmd.Process.Pid {
			printInfo(os.Stdout, info)
			fmt.Println("\nStop it with: baregate-lab down --id " + f.id)
			return nil
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("the lab did not come up (%v):\n%s", err, b)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func printInfo(w io.Writer, info lab.Info) {
	fmt.Fprintf(w, "lab %q: %d nodes, %d clients\n", info.ID, info.Nodes, info.Clients)
	fmt.Fprintf(w, "  API server  %s (reachable from the lab's namespaces)\n", info.Server)
	fmt.Fprintf(w, "  kubeconfig  %s\n", info.Kubeconfig)
	fmt.Fprintf(w, "  state, logs %s\n", info.Dir)
	for i := 1; i <= info.Nodes; i++ {
		v4, v6 := lab.NodeIPs(i)
		p4, _ := lab.PodCIDRs(i)
		fmt.Fprintf(w, "  %-11s %s %s, pods %s\n", lab.NodeName(i), v4, v6, p4)
	}
	for i := 1; i <= info.Clients; i++ {
		v4, v6 := lab.ClientIPs(i)
		fmt.Fprintf(w, "  %-11s %s %s\n", lab.ClientName(i), v4, v6)
	}
}
