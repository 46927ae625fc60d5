// Package proxyproto reads the PROXY protocol (v1 text and v2 binary, as HAProxy specifies it) in
// front of accepted connections, so that clients behind another balancer keep their own address.
package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// v2Signature starts every PROXY protocol v2 header.
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// Header is what a PROXY header says about a connection. Zero addresses mean the sender gave none
// (v1 UNKNOWN, v2 LOCAL or an unsupported family): the connection's own addresses then stand.
type Header struct {
	Source, Destination netip.AddrPort
}

// Read parses one PROXY protocol header (v1 or v2) from r.
func Read(r *bufio.Reader) (Header, error) {
	first, err := r.Peek(1)
	if err != nil {
		return Header{}, fmt.Errorf("reading the PROXY header: %w", err)
	}
	if first[0] == 'P' {
		return readV1(r)
	}
	if first[0] == '\r' {
		return readV2(r)
	}
	return Header{}, errors.New("the connection does not start with a PROXY protocol header")
}

func readV1(r *bufio.Reader) (Header, error) {
	// A v1 header is at most 107 bytes including CRLF.
	var line []byte
	for len(line) < 107 {
		b, err := r.ReadByte()
		if err != nil {
			return Header{}, fmt.Errorf("reading the PROXY v1 header: %w", err)
		}
		line = append(line, b)
		if b == '\n' {
			break
		}
	}
	if !bytes.HasSuffix(line, []byte("\r\n")) {
		return Header{}, errors.New("PROXY v1 header is not terminated by CRLF within 107 bytes")
	}
	f := strings.Split(string(line[:len(line)-2]), " ")
	if f[0] != "PROXY" || len(f) < 2 {
		return Header{}, fmt.Errorf("malformed PROXY v1 header %q", line)
	}
	switch f[1] {
	case "UNKNOWN":
		return Header{}, nil
	case "TCP4", "TCP6":
	default:
		return Header{}, fmt.Errorf("PROXY v1 header has unknown protocol %q", f[1])
	}
	if len(f) != 6 {
		return Header{}, fmt.Errorf("malformed PROXY v1 header %q", line)
	}
	src, err1 := netip.ParseAddr(f[2])
	dst, err2 := netip.ParseAddr(f[3])
	sp, err3 := parsePort(f[4])
	dp, err4 := parsePort(f[5])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Header{}, fmt.Errorf("malformed PROXY v1 header %q: %w", line, err)
	}
	if src.Is4() != (f[1] == "TCP4") || dst.Is4() != (f[1] == "TCP4") || src.Zone() != "" || dst.Zone() != "" {
		return Header{}, fmt.Errorf("PROXY v1 header %q: addresses do not match %s", line, f[1])
	}
	return Header{Source: netip.AddrPortFrom(src, sp), Destination: netip.AddrPortFrom(dst, dp)}, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("bad port %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err
}

func readV2(r *bufio.Reader) (Header, error) {
	var fixed [16]byte
	if _, err := ioReadFull(r, fixed[:]); err != nil {
		return Header{}, fmt.Errorf("reading the PROXY v2 header: %w", err)
	}
	if !bytes.Equal(fixed[:12], v2Signature) {
		return Header{}, errors.New("bad PROXY v2 signature")
	}
	if fixed[12]>>4 != 2 {
		return Header{}, fmt.Errorf("PROXY header version %d, want 2", fixed[12]>>4)
	}
	cmd, fam := fixed[12]&0xf, fixed[13]
	n := int(binary.BigEndian.Uint16(fixed[14:]))
	body := make([]byte, n)
	if _, err := ioReadFull(r, body); err != nil {
		return Header{}, fmt.Errorf("reading the PROXY v2 addresses: %w", err)
	}
	switch cmd {
	case 0: // LOCAL: a health check from the balancer itself
		return Header{}, nil
	case 1:
	default:
		return Header{}, fmt.Errorf("PROXY v2 header has unknown command %d", cmd)
	}
	switch fam {
	case 0x11: // TCP over IPv4
		if n < 12 {
			return Header{}, errors.New("PROXY v2 IPv4 addresses truncated")
		}
		src := netip.AddrFrom4([4]byte(body[0:4]))
		dst := netip.AddrFrom4([4]byte(body[4:8]))
		return Header{
			Source:      netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[8:])),
			Destination: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[10:])),
		}, nil
	case 0x21: // TCP over IPv6
		if n < 36 {
			return Header{}, errors.New("PROXY v2 IPv6 addresses truncated")
		}
		src := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		dst := netip.AddrFrom16([16]byte(body[16:32])).Unmap()
		return Header{
			Source:      netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[32:])),
			Destination: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[34:])),
		}, nil
	default: // UNSPEC, UDP or unix sockets: keep the connection's own addresses
		return Header{}, nil
	}
}

func ioReadFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Listener accepts connections that start with a PROXY header. The header is read on first use of the
// connection (in the server's per-connection goroutine), never in Accept, so a slow client cannot
// stall the accept loop.
type Listener struct {
	net.Listener
	// Timeout bounds the wait for the header.
	Timeout time.Duration
}

// Accept returns the next connection; its RemoteAddr and LocalAddr are the ones the header names.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, timeout: l.Timeout}, nil
}

// Conn is a connection behind a PROXY header.
type Conn struct {
	net.Conn
	timeout time.Duration
	once    sync.Once
	br      *bufio.Reader
	hdr     Header
	err     error
}

func (c *Conn) init() {
	c.once.Do(func() {
		if c.timeout > 0 {
			_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
		}
		c.br = bufio.NewReaderSize(c.Conn, 256)
		c.hdr, c.err = Read(c.br)
		if c.timeout > 0 {
			_ = c.Conn.SetReadDeadline(time.Time{})
		}
		if c.err != nil {
			_ = c.Conn.Close()
		}
	})
}

// Read reads after the header; a connection without a valid header fails its first read.
func (c *Conn) Read(b []byte) (int, error) {
	c.init()
	if c.err != nil {
		return 0, c.err
	}
	if c.br.Buffered() > 0 {
		return c.br.Read(b)
	}
	return c.Conn.Read(b)
}

// RemoteAddr is the client's address from the header.
func (c *Conn) RemoteAddr() net.Addr {
	c.init()
	if c.hdr.Source.IsValid() {
		return net.TCPAddrFromAddrPort(c.hdr.Source)
	}
	return c.Conn.RemoteAddr()
}

// LocalAddr is the address the client connected to, from the header.
func (c *Conn) LocalAddr() net.Addr {
	c.init()
	if c.hdr.Destination.IsValid() {
		return net.TCPAddrFromAddrPort(c.hdr.Destination)
	}
	return c.Conn.LocalAddr()
}
