package lbip

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestConfigFlags(t *testing.T) {
	cfg := DefaultConfig()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	cfg.AddFlags(fs)
	if err := fs.Parse([]string{"--lbip-memberlist-port=7000", "--lbip-interfaces=eth0,eth1", "--lbip-probe-timeout=100ms", "--lbip-memberlist-advertise-address=192.0.2.11"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid flags refused: %v", err)
	}
	if cfg.MemberPort != 7000 || len(cfg.Interfaces) != 2 || cfg.ProbeTimeout != 100*time.Millisecond || cfg.MemberAdvertiseAddress != "192.0.2.11" {
		t.Errorf("flags not applied: %+v", cfg)
	}
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.MemberBindAddress = "eth0" }, "bind-address"},
		{func(c *Config) { c.MemberPort = 0 }, "memberlist-port"},
		{func(c *Config) { c.MemberAdvertiseAddress = "node-1" }, "advertise-address"},
		{func(c *Config) { c.Interfaces = []string{"a/b"} }, "lbip-interfaces"},
		{func(c *Config) { c.ProbeTimeout = 0 }, "probe-timeout"},
	} {
		c := DefaultConfig()
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error about %s", err, tc.want)
		}
	}
}
