package ui

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// hub fans map versions out to the open event streams. A slow client only ever misses
// intermediate versions: each subscriber holds the latest one.
type hub struct {
	mu     sync.Mutex
	subs   map[chan uint64]struct{}
	done   chan struct{}
	closed bool
}

func newHub() *hub {
	return &hub{subs: map[chan uint64]struct{}{}, done: make(chan struct{})}
}

func (h *hub) subscribe() (<-chan uint64, func()) {
	ch := make(chan uint64, 1)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

func (h *hub) publish(version uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case <-ch: // replace an unread older version
		default:
		}
		ch <- version
	}
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// close ends every stream, at shutdown.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
}

const streamKeepAlive = 15 * time.Second

// stream serves /api/events: one "map" event with the current version at once, then one per change.
// It returns, releasing its subscription, when the client goes away or the server shuts down.
func (s *Server) stream(c *gin.Context) {
	if c.Request.Method == http.MethodHead {
		c.Header("Content-Type", "text/event-stream")
		c.Status(http.StatusOK)
		return
	}
	ch, cancel := s.hub.subscribe()
	defer cancel()
	w := c.Writer
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(v uint64) bool {
		cur := s.current.Load()
		_, err := fmt.Fprintf(w, "event: map\nid: %d\ndata: {\"version\":%d,\"generation\":%d}\n\n", v, v, cur.m.Generation)
		w.Flush()
		return err == nil
	}
	if _, err := fmt.Fprint(w, "retry: 2000\n"); err != nil || !send(s.current.Load().version) {
		return
	}
	keepAlive := time.NewTicker(streamKeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-c.Request.Context().Done():
			return
		case <-s.hub.done:
			return
		case v := <-ch:
			if !send(v) {
				return
			}
		case <-keepAlive.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			w.Flush()
		}
	}
}
