package annotations

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"1024", 1024, true}, {"8k", 8 << 10, true}, {"8K", 8 << 10, true}, {"1m", 1 << 20, true},
		{"50M", 50 << 20, true}, {"2g", 2 << 30, true}, {"2G", 2 << 30, true},
		{"", 0, false}, {"m", 0, false}, {"1.5m", 0, false}, {"-1", 0, false}, {"+1", 0, false}, {"10mb", 0, false},
		{"1 m", 0, false}, {"1t", 0, false}, {"9223372036854775807", 1<<63 - 1, true}, {"9223372036854775807k", 0, false},
		{"99999999999999999999", 0, false},
	} {
		got, err := ParseSize(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok %t", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestParseNginxDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"60", time.Minute, true}, {"5s", 5 * time.Second, true}, {"500ms", 500 * time.Millisecond, true},
		{"2m", 2 * time.Minute, true}, {"1h30m", 90 * time.Minute, true}, {"1h 30m", 90 * time.Minute, true},
		{"1d", 24 * time.Hour, true}, {"1w", 7 * 24 * time.Hour, true}, {"1M", 30 * 24 * time.Hour, true},
		{"1y", 365 * 24 * time.Hour, true}, {"1m 30", 90 * time.Second, true}, {"0", 0, true}, {" 10 ", 10 * time.Second, true},
		{"", 0, false}, {"s", 0, false}, {"5 minutes", 0, false}, {"30m1h", 0, false}, {"1m1m", 0, false},
		{"10 20", 0, false}, {"1.5s", 0, false}, {"-5", 0, false}, {"5x", 0, false}, {"106752d", 0, false},
		{"9999999999999999999", 0, false},
	} {
		got, err := ParseNginxDuration(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseNginxDuration(%q) = %v, %v; want %v, ok %t", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestParseCIDRList(t *testing.T) {
	pp := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	for _, c := range []struct {
		in   string
		want []netip.Prefix
	}{
		{"192.0.2.0/24", pp("192.0.2.0/24")},
		{" 192.0.2.0/24 ,198.51.100.1,, 2001:db8::/32 ", pp("192.0.2.0/24", "198.51.100.1/32", "2001:db8::/32")},
		{"0.0.0.0/0", pp("0.0.0.0/0")},
		{"::ffff:192.0.2.0/120", pp("192.0.2.0/24")},
		{"::ffff:192.0.2.1", pp("192.0.2.1/32")},
		{"", nil}, {" , ", nil}, {"192.0.2.1/24", nil}, {"192.0.2.0/33", nil}, {"300.0.0.1", nil},
		{"fe80::1%eth0", nil}, {"example.com", nil}, {"192.0.2.0/24;198.51.100.0/24", nil},
	} {
		got, err := ParseCIDRList(c.in)
		if (err == nil) != (c.want != nil) || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseCIDRList(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestSourceAllowed(t *testing.T) {
	p, _ := Parse(ingress(map[string]string{"allowlist-source-range": "192.0.2.0/24,2001:db8::/32", "denylist-source-range": "192.0.2.66"}, "/"), nil)
	for _, c := range []struct {
		ip   string
		want bool
	}{
		{"192.0.2.1", true}, {"192.0.2.66", false}, {"::ffff:192.0.2.1", true}, {"::ffff:192.0.2.66", false},
		{"198.51.100.1", false}, {"2001:db8::5", true}, {"2001:db9::5", false}, {"fe80::1%eth0", false},
	} {
		if got := p.SourceAllowed(netip.MustParseAddr(c.ip)); got != c.want {
			t.Errorf("SourceAllowed(%s) = %t, want %t", c.ip, got, c.want)
		}
	}
	open, _ := Parse(ingress(nil, "/"), nil)
	if !open.SourceAllowed(netip.MustParseAddr("203.0.113.9")) {
		t.Errorf("no allowlist refused a client")
	}
	deny, _ := Parse(ingress(map[string]string{"denylist-source-range": "203.0.113.0/24"}, "/"), nil)
	if deny.SourceAllowed(netip.MustParseAddr("203.0.113.9")) || !deny.SourceAllowed(netip.MustParseAddr("192.0.2.9")) {
		t.Errorf("denylist alone wrong")
	}
}

func TestHSTSAndDefaults(t *testing.T) {
	for _, c := range []struct {
		h    HSTS
		want string
	}{
		{HSTS{}, ""},
		{HSTS{Enabled: true, MaxAge: time.Hour}, "max-age=3600"},
		{HSTS{Enabled: true, MaxAge: 365 * 24 * time.Hour, IncludeSubdomains: true, Preload: true}, "max-age=31536000; includeSubDomains; preload"},
	} {
		if got := c.h.Header(); got != c.want {
			t.Errorf("%+v.Header() = %q, want %q", c.h, got, c.want)
		}
	}
	d := DefaultDefaults()
	if err := d.Validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
	d.HSTS.Preload = true
	d.HSTS.MaxAge = time.Hour
	if d.Validate() == nil {
		t.Errorf("preload with a short max-age accepted")
	}
	d.HSTS.MaxAge = 1500 * time.Millisecond
	d.HSTS.Preload = false
	if d.Validate() == nil {
		t.Errorf("fractional max-age accepted")
	}
	custom := Defaults{HSTS: HSTS{Enabled: false}}
	p, _ := custom.Parse(ingress(nil, "/"), nil)
	if p.HSTS.Header() != "" {
		t.Errorf("disabled HSTS from Defaults not honoured")
	}
}
