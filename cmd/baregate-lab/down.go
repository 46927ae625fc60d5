package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/baregate/baregate/internal/lab"
)

func cmdDown(ctx context.Context, args []string) error {
	var f labFlags
	fs := pflag.NewFlagSet("down", pflag.ContinueOnError)
	f.add(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The process that runs the lab stops it cleanly; whatever it leaves (or a crashed run left) goes next.
	if info, err := lab.ReadInfo(f.stateDir()); err == nil && info.PID != os.Getpid() {
		if err := syscall.Kill(info.PID, syscall.SIGTERM); err == nil {
			deadline := time.Now().Add(time.Minute)
			for time.Now().Before(deadline) && !errors.Is(syscall.Kill(info.PID, 0), syscall.ESRCH) {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	if err := lab.Cleanup(ctx, f.id); err != nil {
		return err
	}
	os.Remove(f.stateDir() + "/lab.json")
	fmt.Printf("lab %q is down\n", f.id)
	return nil
}
