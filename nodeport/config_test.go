package nodeport

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestConfigFlagsAndValidate(t *testing.T) {
	var c Config
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	c.AddFlags(fs)
	if err := fs.Parse([]string{"--nodeport-addresses=192.0.2.0/24,2001:db8::/64", "--nodeport-min-sync-period=100ms"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults plus good flags: %v", err)
	}
	if c.MasqueradeBit != 14 || c.HealthzTimeout.Seconds() != 60 || len(c.NodePortAddresses) != 2 {
		t.Errorf("parsed %+v", c)
	}
	for _, tc := range []struct {
		flag, want string
	}{
		{"--nodeport-masquerade-bit=32", "masquerade-bit"},
		{"--nodeport-addresses=192.0.2.1", "not a CIDR"},
		{"--nodeport-cluster-cidr=198.18.0.0/33", "not a CIDR"},
		{"--nodeport-healthz-timeout=0s", "healthz-timeout"},
		{"--nodeport-healthcheck-bind-address=localhost", "bind-address"},
		{"--nodeport-min-sync-period=-1s", "min-sync-period"},
	} {
		var c Config
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		c.AddFlags(fs)
		if err := fs.Parse([]string{tc.flag}); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v; want an error about %s", tc.flag, err, tc.want)
		}
	}
}
