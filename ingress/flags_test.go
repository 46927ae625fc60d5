package ingress

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func newFlagSet() *pflag.FlagSet { return pflag.NewFlagSet("test", pflag.ContinueOnError) }

func TestConfigDefaultsAndValidate(t *testing.T) {
	var c Config
	fs := newFlagSet()
	c.AddFlags(fs)
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if c.HTTPAddress != ":80" || c.HTTPSAddress != ":443" || c.ConnectTimeout.Seconds() != 5 || c.ReadTimeout.Seconds() != 60 || c.Service != "baregate-system/baregate-ingress" {
		t.Errorf("unexpected defaults %+v", c)
	}
	cases := map[string]string{
		"--ingress-service=nonamespace":           "namespace/name",
		"--ingress-load-balance=random":           "round-robin",
		"--ingress-connect-timeout=0s":            "must be positive",
		"--ingress-http-address=nonsense":         "--ingress-http-address",
		"--ingress-retries=9":                     "0 to 3",
		"--ingress-max-idle-conns-per-endpoint=0": "at least 1",
	}
	for arg, want := range cases {
		var c Config
		fs := newFlagSet()
		c.AddFlags(fs)
		if err := fs.Parse([]string{arg}); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one mentioning %q", arg, err, want)
		}
	}
	c = Config{}
	c.AddFlags(newFlagSet())
	c.HTTPAddress, c.HTTPSAddress = "", ""
	if err := c.Validate(); err == nil {
		t.Error("no listener at all accepted")
	}
}
