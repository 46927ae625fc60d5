package proxy

import (
	"io"
	"net/http"
)

// upgrade completes a protocol switch (WebSocket and the like): it hands the backend's 101 to the
// client and then copies bytes both ways until either side closes.
func (h *handler) upgrade(w http.ResponseWriter, r *http.Request, resp *http.Response) (int, int64) {
	backend, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		h.plain(w, http.StatusBadGateway, "the backend switched protocols without a usable connection")
		return http.StatusBadGateway, 0
	}
	defer backend.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.plain(w, http.StatusInternalServerError, "this connection cannot switch protocols")
		return http.StatusInternalServerError, 0
	}
	defer conn.Close()
	resp.Header["Server"] = h.p.serverHdr
	resp.Body = nil
	if err := resp.Write(brw); err != nil {
		return http.StatusSwitchingProtocols, 0
	}
	if err := brw.Flush(); err != nil {
		return http.StatusSwitchingProtocols, 0
	}
	done := make(chan struct{})
	go func() {
		// Bytes the client sent after its request and the server already buffered go first.
		_, _ = io.Copy(backend, brw.Reader)
		// The client is gone: close the backend too, which also ends the copy below.
		_ = backend.Close()
		close(done)
	}()
	// Each write to the client waits at most the client send timeout, as nginx bounds an upgraded
	// connection's writes by send_timeout; reads wait for as long as the connection lives.
	n, _ := io.Copy(&idleTimeoutConn{Conn: conn, write: h.p.opts.ClientSendTimeout}, backend)
	_ = conn.Close()
	<-done
	return http.StatusSwitchingProtocols, n
}
