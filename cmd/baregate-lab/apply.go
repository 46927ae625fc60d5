package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/baregate/baregate/internal/lab"
)

func cmdApply(ctx context.Context, args []string) error {
	var f labFlags
	var files []string
	fs := pflag.NewFlagSet("apply", pflag.ContinueOnError)
	f.add(fs)
	fs.StringArrayVarP(&files, "filename", "f", nil, "A manifest file (YAML or JSON, several documents allowed); - reads stdin. Repeatable.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("apply: give at least one -f FILE")
	}
	info, err := lab.ReadInfo(f.stateDir())
	if err != nil {
		return err
	}
	cfg, err := info.RESTConfig()
	if err != nil {
		return err
	}
	for _, name := range files {
		var b []byte
		if name == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(name)
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", name, err)
		}
		if err := lab.Apply(ctx, cfg, b); err != nil {
			return err
		}
		fmt.Printf("applied %s\n", name)
	}
	return nil
}
