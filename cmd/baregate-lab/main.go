// Command baregate-lab brings up, inspects and removes the baregate lab: a Kubernetes control plane,
// nodes, clients and a LAN in network namespaces of this host, for tests, benchmarks and the demo.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/internal/lab/echo"
)

const usage = `usage: baregate-lab <command> [flags]

commands:
  up       bring up a lab (foreground until Ctrl-C, or --detach)
  down     stop a lab and remove its namespaces and processes
  status   show a lab's hosts, nodes and pods
  exec     run a command on a lab host: baregate-lab exec client1 -- curl http://203.0.113.1/
  apply    apply Kubernetes manifests to a lab: baregate-lab apply -f app.yaml
  demo     a 2-node lab with a sample app behind baregate, until Ctrl-C

Run "baregate-lab <command> --help" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "up":
		err = cmdUp(ctx, args)
	case "down":
		err = cmdDown(ctx, args)
	case "status":
		err = cmdStatus(ctx, args)
	case "exec":
		err = cmdExec(args)
	case "apply":
		err = cmdApply(ctx, args)
	case "demo":
		err = cmdDemo(ctx, args)
	case "pod-run":
		// Hidden: the lab kubelet starts a container's built-in program this way.
		err = podRun(args)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		fmt.Fprintln(os.Stderr, "baregate-lab:", err)
		os.Exit(1)
	}
}

// exitError passes a child's exit status through.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func podRun(args []string) error {
	if len(args) == 0 {
		return errors.New("pod-run: which program?")
	}
	switch args[0] {
	case echo.Program:
		return echo.Main(args[1:])
	case lab.GatewayProgram:
		// The gateway Pod's command is the baregate binary itself: become it, so the kubelet's
		// signals and the process tree are those of a real container.
		if len(args) < 2 {
			return errors.New("pod-run gateway: no command")
		}
		return syscall.Exec(args[1], args[1:], os.Environ())
	}
	return fmt.Errorf("pod-run: no built-in program %q", args[0])
}
