package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func v2(cmd, fam byte, addrs []byte) []byte {
	b := append([]byte{}, v2Signature...)
	b = append(b, 0x20|cmd, fam, 0, 0)
	binary.BigEndian.PutUint16(b[14:], uint16(len(addrs)))
	return append(b, addrs...)
}

func TestRead(t *testing.T) {
	v4 := []byte{192, 0, 2, 101, 203, 0, 113, 1, 0xc3, 0x50, 0x01, 0xbb}
	v6 := append(append(netip.MustParseAddr("2001:db8::1").AsSlice(), netip.MustParseAddr("2001:db8:0:2::1").AsSlice()...), 0x04, 0xd2, 0x00, 0x50)
	cases := []struct {
		name, in, src, dst, rest string
		wantErr                  bool
	}{
		{name: "v1 tcp4", in: "PROXY TCP4 192.0.2.101 203.0.113.1 50000 443\r\nGET /", src: "192.0.2.101:50000", dst: "203.0.113.1:443", rest: "GET /"},
		{name: "v1 tcp6", in: "PROXY TCP6 2001:db8::1 2001:db8::2 1 80\r\nx", src: "[2001:db8::1]:1", dst: "[2001:db8::2]:80", rest: "x"},
		{name: "v1 unknown", in: "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nx", rest: "x"},
		{name: "v1 family mismatch", in: "PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n", wantErr: true},
		{name: "v1 bad port", in: "PROXY TCP4 192.0.2.1 192.0.2.2 99999 2\r\n", wantErr: true},
		{name: "v1 leading zero port", in: "PROXY TCP4 192.0.2.1 192.0.2.2 080 2\r\n", wantErr: true},
		{name: "v1 no CRLF", in: "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n", wantErr: true},
		{name: "v1 too long", in: "PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n", wantErr: true},
		{name: "v2 tcp4", in: string(v2(1, 0x11, v4)) + "rest", src: "192.0.2.101:50000", dst: "203.0.113.1:443", rest: "rest"},
		{name: "v2 tcp6", in: string(v2(1, 0x21, v6)) + "r", src: "[2001:db8::1]:1234", dst: "[2001:db8:0:2::1]:80", rest: "r"},
		{name: "v2 tcp4 with TLVs", in: string(v2(1, 0x11, append(append([]byte{}, v4...), 0x04, 0, 1, 'x'))) + "r", src: "192.0.2.101:50000", dst: "203.0.113.1:443", rest: "r"},
		{name: "v2 local", in: string(v2(0, 0x00, nil)) + "r", rest: "r"},
		{name: "v2 truncated", in: string(v2(1, 0x11, v4[:6])), wantErr: true},
		{name: "v2 bad command", in: string(v2(3, 0x11, v4)), wantErr: true},
		{name: "no header", in: "GET / HTTP/1.1\r\n", wantErr: true},
	}
	for _, c := range cases {
		br := bufio.NewReader(strings.NewReader(c.in))
		h, err := Read(br)
		if (err != nil) != c.wantErr {
			t.Errorf("%s: err %v, wantErr %v", c.name, err, c.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		rest, _ := io.ReadAll(br)
		if got := addrOrEmpty(h.Source); got != c.src {
			t.Errorf("%s: source %s, want %s", c.name, got, c.src)
		}
		if got := addrOrEmpty(h.Destination); got != c.dst {
			t.Errorf("%s: destination %s, want %s", c.name, got, c.dst)
		}
		if string(rest) != c.rest {
			t.Errorf("%s: rest %q, want %q", c.name, rest, c.rest)
		}
	}
}

func addrOrEmpty(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// TestListener: over real TCP, the accepted connection reports the header's addresses and yields
// the bytes after the header; a connection without a header is refused at its first read.
func TestListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &Listener{Listener: ln, Timeout: 5 * time.Second}
	t.Cleanup(func() { pl.Close() })
	send := func(payload string) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte(payload)); err != nil {
			t.Fatal(err)
		}
	}
	send("PROXY TCP4 192.0.2.101 203.0.113.1 50000 443\r\nhello")
	c, err := pl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RemoteAddr().String(); got != "192.0.2.101:50000" {
		t.Errorf("RemoteAddr %s", got)
	}
	if got := c.LocalAddr().String(); got != "203.0.113.1:443" {
		t.Errorf("LocalAddr %s", got)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Errorf("payload %q, %v", buf, err)
	}
	c.Close()

	send("GET / HTTP/1.1\r\n\r\n")
	c, err = pl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); err == nil {
		t.Error("a connection without a PROXY header was read from")
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.101 203.0.113.1 50000 443\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::1 2001:db8::2 1 80\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(v2(1, 0x11, []byte{192, 0, 2, 1, 192, 0, 2, 2, 0, 1, 0, 2}))
	f.Add(v2(1, 0x21, make([]byte, 36)))
	f.Add(v2(0, 0, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := Read(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			return
		}
		// A header that parses names either no addresses or two valid ones.
		if h.Source.IsValid() != h.Destination.IsValid() {
			t.Fatalf("half a header: %+v", h)
		}
	})
}
