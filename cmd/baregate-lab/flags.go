package main

import (
	"github.com/spf13/pflag"

	"github.com/baregate/baregate/internal/lab"
)

// labFlags are the flags that find a lab: its id and state directory.
type labFlags struct {
	id, dir string
}

func (f *labFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.id, "id", "lab", "The lab's id; it prefixes the lab's network namespaces, so several labs can run at once.")
	fs.StringVar(&f.dir, "dir", "", "The lab's state directory (control plane, kubeconfig, logs). Default $TMPDIR/baregate-lab-<id>.")
}

func (f *labFlags) stateDir() string {
	if f.dir != "" {
		return f.dir
	}
	return lab.DefaultDir(f.id)
}
