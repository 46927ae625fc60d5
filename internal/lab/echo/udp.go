package echo

import (
	"bytes"
	"net"
)

// serveUDP answers each datagram: the agnhost netexec commands ("hostname", "echo <msg>",
// "clientip") as agnhost does, anything else by echoing it back unchanged.
func (s *Server) serveUDP(c net.PacketConn) {
	buf := make([]byte, 64*1024)
	for {
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			return // closed by Serve
		}
		_, _ = c.WriteTo(s.udpAnswer(buf[:n], peer), peer)
	}
}

func (s *Server) udpAnswer(msg []byte, peer net.Addr) []byte {
	cmd := bytes.TrimRight(msg, "\r\n")
	switch {
	case string(cmd) == "hostname":
		return []byte(s.cfg.Names.Pod)
	case string(cmd) == "clientip":
		return []byte(peer.String())
	case bytes.HasPrefix(cmd, []byte("echo ")):
		return cmd[len("echo "):]
	}
	return msg
}
