package pebbletest

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// startDNS serves DNS over TCP (what Pebble's validator speaks to a custom resolver) on loopback,
// answering every A question with 127.0.0.1 and every other question with no records.
func startDNS(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveDNS(c)
		}
	}()
	return ln.Addr().String()
}

func serveDNS(c net.Conn) {
	defer c.Close()
	for {
		var n uint16
		if binary.Read(c, binary.BigEndian, &n) != nil {
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		var q dnsmessage.Message
		if q.Unpack(buf) != nil || len(q.Questions) != 1 {
			return
		}
		r := dnsmessage.Message{Header: dnsmessage.Header{ID: q.ID, Response: true, Authoritative: true}, Questions: q.Questions}
		if qq := q.Questions[0]; qq.Type == dnsmessage.TypeA {
			r.Answers = []dnsmessage.Resource{{
				Header: dnsmessage.ResourceHeader{Name: qq.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 1},
				Body:   &dnsmessage.AResource{A: netip.MustParseAddr("127.0.0.1").As4()},
			}}
		}
		out, err := r.Pack()
		if err != nil {
			return
		}
		if binary.Write(c, binary.BigEndian, uint16(len(out))) != nil {
			return
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}
