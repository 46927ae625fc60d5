package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestFlagValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // substring of the error
	}{
		{"missing node name", []string{"--node-name="}, "--node-name is required"},
		{"bad node name", []string{"--node-name=Node_1"}, "not a valid node name"},
		{"bad admin address", []string{"--node-name=n1", "--admin-address=9710"}, "--admin-address"},
		{"bad namespace", []string{"--node-name=n1", "--namespace=Bad.NS"}, "not a valid namespace"},
		{"leader timings", []string{"--node-name=n1", "--leader-elect-renew-deadline=20s"}, "retry-period < --leader-elect-renew-deadline"},
		{"all off", []string{"--node-name=n1", "--lbip=false", "--nodeport=false", "--ingress=false", "--ui=false"}, "nothing to run"},
		{"not a duration", []string{"--node-name=n1", "--snapshot-min-interval=soon"}, "invalid argument"},
		{"unknown flag", []string{"--node-name=n1", "--frobnicate"}, "unknown flag"},
		{"positional", []string{"--node-name=n1", "extra"}, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newCommand()
			cmd.SetArgs(tc.args)
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestHelpListsEveryComponentSwitch(t *testing.T) {
	cmd := newCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"--lbip", "--nodeport", "--ingress", "--ui", "--node-name", "--kubeconfig", "--admin-address", "-v, --v"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("--help does not mention %s:\n%s", f, out.String())
		}
	}
}
