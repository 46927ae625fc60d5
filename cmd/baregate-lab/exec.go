package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/spf13/pflag"
)

// cmdExec replaces this process with the command inside the host's namespace, so terminals, signals and
// the exit status behave as if it ran directly.
func cmdExec(args []string) error {
	var f labFlags
	fs := pflag.NewFlagSet("exec", pflag.ContinueOnError)
	fs.SetInterspersed(false)
	f.add(fs)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: baregate-lab exec [--id lab] <host> -- <command> [args...]\n"+
			"hosts: cp, lan, node<N>, client<N>")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	if len(rest) < 2 {
		fs.Usage()
		return exitError(2)
	}
	host, argv := rest[0], rest[1:]
	if argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		fs.Usage()
		return exitError(2)
	}
	ns := f.id + "-" + host
	if _, err := os.Stat("/run/netns/" + ns); err != nil {
		return fmt.Errorf("no host %q in lab %q (is it up?)", host, f.id)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return err
	}
	return syscall.Exec(ip, append([]string{"ip", "netns", "exec", ns}, argv...), os.Environ())
}
