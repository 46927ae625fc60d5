package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/baregate/baregate/ingress/route"
)

// The event-loop lane: HTTP/1.x client connections without a PROXY header, cleartext or TLS after
// the handshake (see LoopConn), are served by a few event loops, one per CPU, instead of a goroutine
// each. A loop waits on all its sockets with an epoll instance of its own and reads or writes one
// only when the kernel said it can, as nginx does. A goroutine per connection pays, per request, two reads that find nothing (Go's poller
// reads before it parks) and a check of the pooled backend connection, besides a round trip
// through the scheduler: most of what the proxy spent beyond nginx on a small request.
//
// A loop serves what the direct lane serves (direct.go), with the same code for the bytes on both
// wires. Anything else hands the client connection, with the bytes read and not consumed, to a
// goroutine of the fast path (serve1.go) for the rest of its life: a request the direct lane does
// not take, a response the loop does not relay itself (neither Content-Length nor chunked framing,
// 1xx, see gotHead), and error answers. A chunked body goes to the client with the backend's
// framing, which chunkedBody follows to find its end.
//
// The loop's epoll descriptor is itself waited on through Go's poller, so a loop with nothing to do
// parks like any goroutine. Client sockets stay registered with Go's poller too, which lets a
// connection go to a goroutine as the net.Conn it came as; backend sockets the loop dials itself.
//
// A pooled backend connection needs no check before reuse: a backend that closes it or writes to it
// while it is idle makes an event, and the loop closes it at once. Deadlines are checked every
// loopTick, as coarse as the goroutine lane's deadline updates. The request and response heads are
// parsed in place, their strings pointing into the loop's buffers until the exchange ends, so that a
// request allocates nothing and a busy loop does not keep the GC running.

const (
	loopHeadMax = 8 << 10  // a longer request head goes to net/http, as from fconn's 8 KiB reader
	loopReadMax = 16 << 10 // a backend read, as h1Conn's reader
	loopTick    = 250 * time.Millisecond
	loopSlice   = time.Millisecond // the longest the loop runs before it lets other goroutines run
)

// Client connection phases.
const (
	cHead  = iota // waiting for a request head, or for the rest of one
	cBusy         // the request is with the backend, nothing of the response sent yet
	cRelay        // relaying the response
)

// Backend connection phases.
const (
	uConnect = iota
	uWrite   // sending the request
	uHead    // reading the response head
	uBody    // relaying the response body
	uIdle    // pooled
)

// evloop is one event loop. Everything but the inbox belongs to the loop's goroutine.
type evloop struct {
	s      *ConnServer
	epfd   int
	file   *os.File // epfd, waited on through Go's poller
	raw    syscall.RawConn
	wakefd int // an eventfd: other goroutines post to the inbox and write to it

	mu      sync.Mutex
	inbox   []net.Conn  // *net.TCPConn, or *tls.Conn over a LoopConn
	closing bool        // Shutdown began: close idle connections
	stopped atomic.Bool // close everything and return (set under mu, so that post does not race it)
	done    chan struct{}

	slots     []slot // by file descriptor
	gen       uint32
	events    [128]unix.EpollEvent
	now       int64 // unix nanoseconds, read once per batch of events
	nextSweep int64
	cur       *lclient // the client whose event is being handled, for a panic
	err       error    // why poll ended the loop
	busySince int64    // when the loop last started handling events without parking in between
	idle      map[*endpoint][]*lupstream
	free      [][]byte // read buffers of loopReadMax bytes
	obuf      []byte   // client output being assembled
	tlsOut    []byte   // TLS records on their way to a client socket (see lclient.outShared)
	sink      sink
	bw        *bufio.Writer // writes into sink
}

type slot struct {
	gen uint32
	c   *lclient
	u   *lupstream
}

// lclient is a client connection on a loop.
type lclient struct {
	nc       *net.TCPConn
	tls      *tls.Conn // nil for plain connections
	sw       *LoopConn // under tls
	tlsMore  bool      // tls may hold more records than the socket's readiness says
	fd       int
	gen      uint32
	remote   string
	phase    int
	readable bool // edge-triggered readiness: true until a read finds the socket empty
	writable bool
	hup      bool   // the peer closed or the socket failed: reads go on until they say so
	reading  bool   // readRequests is running for it (a response that finishes at once returns to it)
	in       []byte // bytes read, in a loop buffer: the head of the request in flight (used bytes), then unread ones
	used     int    // head's strings point into in[:used]: the buffer is neither moved nor reused meanwhile
	out      []byte // response bytes the socket did not take yet, from out[sent:]
	sent     int
	// outShared: out is the loop's TLS output buffer (tlsOut), which tls.Conn's records go to
	// before they are sent; bytes the socket does not take are copied out of it.
	outShared bool
	l         *evloop
	// deadline (unix nanoseconds, 0 for none) is the idle or header timeout's while a head is
	// awaited, and the client send timeout's while response bytes wait for the socket.
	deadline int64
	head     reqHead
	x        exch
}

// exch is the request a client connection has in flight.
type exch struct {
	st       *state
	rt       *route.Route
	pl       *pool
	bs       *backendStats
	start    time.Time
	triedBuf [4]*endpoint
	tried    []*endpoint
	attempts int
	ep       *endpoint
	u        *lupstream
	redialed bool // sent again on a new connection after a reused one failed (exchangeDirect's second attempt)
	rh       directHead
	headSent bool
	ownHead  bool  // rh's strings were copied out of the read buffer
	left     int64 // body bytes still to relay, for a Content-Length
	// A chunked body is relayed with the backend's framing, which ch follows. An empty one without
	// announced trailers goes out with Content-Length: 0 instead, as from the goroutine lane, which
	// frames a body by the first bytes it has: the first chunk-size line tells, before the head.
	chunked bool
	chStart bool // the first chunk-size line was seen
	chEmpty bool
	ch      chunkedBody
	bodyErr error // the backend's body is malformed after the bytes relayed so far
	keep    bool  // the client connection may serve another request
	o       outcome
}

// bodyDone reports whether the response body has been relayed to its end (the head aside).
func (x *exch) bodyDone() bool {
	if x.chunked {
		return x.ch.done()
	}
	return x.left == 0
}

// lupstream is a backend connection of a loop.
type lupstream struct {
	fd       int
	gen      uint32
	ep       *endpoint
	c        *lclient // the client whose request it carries; nil when idle
	phase    int
	readable bool
	writable bool
	hup      bool
	reused   bool
	in       []byte // a loop buffer while a response is read; in[r:w] is unread
	r, w     int
	out      []byte // the request
	wo       int    // bytes of out sent
	deadline int64
	usedAt   int64
}

// sockRead and sockWrite read and write a non-blocking socket without telling the scheduler: they
// cannot block, and entering and leaving a system call the way syscall.Read does costs more than a
// short one. They return the count, or 0 and the error.
func sockRead(fd int, b []byte) (int, error)  { return sockIO(unix.SYS_READ, fd, b) }
func sockWrite(fd int, b []byte) (int, error) { return sockIO(unix.SYS_SENDTO, fd, b) }

func sockIO(trap uintptr, fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	// sendto's flags: a peer that reset the connection gives EPIPE without a SIGPIPE to the process.
	n, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// epollReady takes the ready events without waiting. Like sockRead it does not tell the scheduler:
// syscall.Syscall would wake the runtime's sysmon thread each time it went to sleep because the
// loop had parked, and its wake-ups, every 20 us for a while after each, cost more CPU than the
// loop's own work at a few thousand requests a second.
func epollReady(epfd int, evs []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// alias returns b as a string without copying it; b must not change while the string is used.
func alias(b []byte) string { return unsafe.String(&b[0], len(b)) }

// sink collects what a bufio.Writer flushes.
type sink struct{ b []byte }

func (s *sink) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

func newLoop(s *ConnServer) (*evloop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating an epoll instance: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("creating an eventfd: %w", err)
	}
	l := &evloop{s: s, epfd: epfd, wakefd: wakefd, done: make(chan struct{}), idle: map[*endpoint][]*lupstream{}}
	l.bw = bufio.NewWriterSize(&l.sink, 4<<10)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("watching the eventfd: %w", err)
	}
	// Non-blocking, the descriptor joins Go's poller: the loop parks in waitRead like a socket reader.
	if err := unix.SetNonblock(epfd, true); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("setting the epoll descriptor non-blocking: %w", err)
	}
	l.file = os.NewFile(uintptr(epfd), "epoll")
	if err = l.file.SetReadDeadline(time.Now().Add(loopTick)); err == nil {
		l.raw, err = l.file.SyscallConn()
	}
	if err != nil { // not in Go's poller: the loop could not park
		l.file.Close()
		unix.Close(wakefd)
		return nil, fmt.Errorf("waiting on the epoll descriptor: %w", err)
	}
	go l.run()
	return l, nil
}

func (l *evloop) closeFDs() {
	unix.Close(l.epfd)
	unix.Close(l.wakefd)
}

// post gives a client connection to the loop; false when the loop has stopped.
func (l *evloop) post(c net.Conn) bool {
	l.mu.Lock()
	if l.stopped.Load() {
		l.mu.Unlock()
		return false
	}
	l.inbox = append(l.inbox, c)
	l.mu.Unlock()
	l.wake()
	return true
}

func (l *evloop) wake() {
	one := [8]byte{1}
	_, _ = unix.Write(l.wakefd, one[:])
}

// shutdown asks the loop to close its idle client connections, stop closes them all and ends the loop.
func (l *evloop) shutdown() {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.wake()
}

func (l *evloop) stop() {
	l.mu.Lock()
	l.stopped.Store(true)
	l.mu.Unlock()
	l.wake()
	<-l.done
}

func (l *evloop) run() {
	defer close(l.done)
	l.now = time.Now().UnixNano()
	l.nextSweep = l.now + int64(loopTick)
	for {
		err := l.raw.Read(l.poll)
		if l.stopped.Load() {
			break
		}
		if err == nil {
			err = l.err
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			l.now = time.Now().UnixNano()
			l.sweep()
			_ = l.file.SetReadDeadline(time.Now().Add(loopTick))
			continue
		}
		if err != nil {
			l.s.h.p.opts.Logger.Error(err, "Waiting for events failed; the event loop stops")
			break
		}
	}
	l.closeAll()
	l.file.Close()
	unix.Close(l.wakefd)
}

// poll handles the ready events until there are none; it returns false to wait for more (Go's
// poller wakes the loop when the epoll descriptor becomes readable) and true to end the loop.
func (l *evloop) poll(uintptr) bool {
	for {
		n, err := epollReady(l.epfd, l.events[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			l.err = fmt.Errorf("reading events: %w", err)
			return true
		}
		if n <= 0 {
			l.busySince = 0
			return false
		}
		l.now = time.Now().UnixNano()
		if l.busySince == 0 {
			l.busySince = l.now
		} else if l.now-l.busySince > int64(loopSlice) {
			// Full batches keep the loop from parking; other goroutines of this P (TLS
			// connections, the GC's workers) get their turn now rather than at sysmon's 10 ms.
			runtime.Gosched()
			l.busySince = l.now
		}
		for i := 0; i < n; {
			i = l.handle(l.events[:n], i)
		}
		if l.now >= l.nextSweep {
			l.sweep()
		}
		if l.stopped.Load() {
			return true
		}
		if n < len(l.events) {
			l.busySince = 0
			// The ready list was empty after this batch was taken: whatever came since woke Go's
			// poller, and waiting returns at once. That saves an epoll_wait that finds nothing.
			return false
		}
	}
}

// handle handles evs from index i and returns the index to go on from: past the event whose
// handling panicked, after closing that event's client connection.
func (l *evloop) handle(evs []unix.EpollEvent, i int) (next int) {
	defer func() {
		if v := recover(); v != nil {
			l.s.h.p.opts.Logger.Error(fmt.Errorf("%v", v), "Panic in the event loop; closing the connection")
			if c := l.cur; c != nil && l.owns(c) {
				l.abandon(c)
			}
			next = i + 1
		}
	}()
	// A pooled connection the backend closed or wrote to goes before any request of this batch can
	// take it.
	if i == 0 {
		for k := range evs {
			if _, u := l.lookup(&evs[k]); u != nil && u.phase == uIdle && evs[k].Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				l.closeUpstream(u)
			}
		}
	}
	for ; i < len(evs); i++ {
		ev := &evs[i]
		if int(ev.Fd) == l.wakefd {
			l.takeInbox()
			continue
		}
		c, u := l.lookup(ev)
		in := ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
		out := ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0
		// A short read normally means the next bytes come with an event of their own; an end that
		// was signalled with the last bytes does not come again.
		hup := ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
		switch {
		case c != nil:
			l.cur = c
			c.readable = c.readable || in
			c.writable = c.writable || out
			c.hup = c.hup || hup
			switch c.phase {
			case cHead:
				l.readRequests(c)
			case cRelay: // body bytes may wait in c.out or in the backend connection's buffer
				if c.writable {
					l.relay(c.x.u)
				}
			}
		case u != nil:
			l.cur = u.c
			u.readable = u.readable || in
			u.writable = u.writable || out
			u.hup = u.hup || hup
			l.upstreamReady(u)
		}
		l.cur = nil
	}
	return i
}

func (l *evloop) lookup(ev *unix.EpollEvent) (*lclient, *lupstream) {
	fd := int(ev.Fd)
	if fd < 0 || fd >= len(l.slots) || l.slots[fd].gen != uint32(ev.Pad) {
		return nil, nil // closed since the event was queued
	}
	return l.slots[fd].c, l.slots[fd].u
}

func (l *evloop) owns(c *lclient) bool {
	return c.fd < len(l.slots) && l.slots[c.fd].c == c
}

// watch adds fd to the epoll set, edge-triggered for reading and writing, and returns its slot's
// generation, which the events carry.
func (l *evloop) watch(fd int) (uint32, error) {
	l.gen++
	if l.gen == 0 {
		l.gen = 1
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd), Pad: int32(l.gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return 0, err
	}
	for fd >= len(l.slots) {
		l.slots = append(l.slots, slot{})
	}
	l.slots[fd] = slot{gen: l.gen}
	return l.gen, nil
}

func (l *evloop) unwatch(fd int, remove bool) {
	if fd < len(l.slots) {
		l.slots[fd] = slot{}
	}
	if remove { // a closed descriptor leaves the set by itself
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
}

// takeInbox registers the posted connections and applies Shutdown's requests.
func (l *evloop) takeInbox() {
	var b [8]byte
	_, _ = unix.Read(l.wakefd, b[:])
	l.mu.Lock()
	inbox, closing := l.inbox, l.closing
	l.inbox = nil
	l.mu.Unlock()
	for _, nc := range inbox {
		l.adoptConn(nc)
	}
	if closing {
		for _, sl := range l.slots {
			if c := sl.c; c != nil && c.phase == cHead && len(c.in) == 0 {
				l.closeClient(c)
			}
		}
	}
}

func (l *evloop) adoptConn(conn net.Conn) {
	nc, _ := conn.(*net.TCPConn)
	c := &lclient{fd: -1, l: l}
	if tc, ok := conn.(*tls.Conn); ok {
		c.tls, c.sw = tc, tc.NetConn().(*LoopConn)
		nc = c.sw.TCPConn
	}
	c.nc = nc
	if rc, err := nc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { c.fd = int(fd) })
	}
	var err error
	if c.fd < 0 {
		err = errors.New("no file descriptor")
	} else {
		c.gen, err = l.watch(c.fd)
	}
	if err != nil { // serve it with a goroutine instead
		l.s.h.p.opts.Logger.V(2).Info("Watching a client connection failed", "err", err)
		fc := l.s.newConn(conn)
		l.s.track(fc)
		l.s.looped.Add(-1)
		go l.s.run(fc, nil)
		return
	}
	l.slots[c.fd].c = c
	if c.sw != nil {
		c.sw.c = c // from now on its tls.Conn reads and writes without blocking
		// The handshake may have read the first request's records: no event would say so.
		c.tlsMore = true
	}
	c.remote = nc.RemoteAddr().String()
	c.head.header = make(http.Header, 8)
	c.phase = cHead
	c.deadline = l.after(l.s.opts.IdleTimeout)
	// The registration queues the socket's current readiness: its first request comes as an event.
}

// after returns the deadline d from now, 0 for none.
func (l *evloop) after(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return l.now + int64(d)
}

func (l *evloop) getBuf() []byte {
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free = l.free[:n-1]
		return b[:0]
	}
	return make([]byte, 0, loopReadMax)
}

func (l *evloop) putBuf(b []byte) {
	if cap(b) == loopReadMax && len(l.free) < 256 {
		l.free = append(l.free, b[:0])
	}
}

// readRequests reads and serves c's requests until it has to wait.
func (l *evloop) readRequests(c *lclient) {
	if c.reading {
		return // the caller up the stack goes on
	}
	c.reading = true
	defer func() { c.reading = false }()
	for c.phase == cHead && l.owns(c) {
		if len(c.in) > 0 {
			switch parseHeadWith(c.in, &c.head, alias) {
			case headOK:
				l.request(c)
				continue
			case headSlow:
				l.toGoroutine(c, nil)
				return
			}
			if len(c.in) >= loopHeadMax {
				l.toGoroutine(c, nil) // net/http's limit applies
				return
			}
		} else if l.s.shutting.Load() {
			l.closeClient(c)
			return
		}
		if !c.readable && !c.tlsMore {
			if len(c.in) == 0 {
				c.deadline = l.after(l.s.opts.IdleTimeout)
				l.putBuf(c.in)
				c.in = nil
			} else if c.deadline == 0 {
				c.deadline = l.after(l.s.opts.ReadHeaderTimeout)
			}
			return
		}
		if c.in == nil {
			c.in = l.getBuf()
		}
		space := c.in[len(c.in):min(cap(c.in), loopHeadMax)]
		n, err := l.readClient(c, space)
		switch {
		case err == unix.EAGAIN:
		case n <= 0: // closed by the client, or failed: what was read of a head goes with it
			l.closeClient(c)
			return
		default:
			c.in = c.in[:len(c.in)+n]
			if c.deadline != 0 && len(c.in) == n {
				c.deadline = 0 // the header timeout starts if the head is not complete
			}
		}
	}
}

// readClient reads request bytes from c: what the socket has, or what its TLS records hold. It
// returns unix.EAGAIN when there is nothing to read now and (0, nil) or another error when the
// connection ended.
func (l *evloop) readClient(c *lclient, b []byte) (int, error) {
	if c.tls == nil {
		return c.read(b)
	}
	// tls.Conn.Read returns one record's bytes at a time, and may hold more records already read:
	// it is called again until LoopConn says the socket had nothing.
	n, err := c.tls.Read(b)
	c.tlsMore = n > 0
	if c.pending() { // answers to post-handshake messages (a KeyUpdate), alerts
		if _, ferr := l.flush(c); ferr != nil {
			return 0, ferr // the caller closes the connection
		}
	}
	if n > 0 {
		return n, nil
	}
	if errors.Is(err, errWouldBlock) {
		return 0, unix.EAGAIN
	}
	return 0, err
}

// request serves the head just parsed, on the loop or by handing the connection to a goroutine.
func (l *evloop) request(c *lclient) {
	s, h := l.s, &c.head
	path, _, _ := strings.Cut(h.target, "?")
	st := s.h.p.state.Load()
	var rt *route.Route
	if st != nil && plainPath(path) {
		rt = st.table.Match(h.host, path)
	}
	if rt == nil || !s.directOK(h, st, rt) || s.opts.Slow != nil && s.opts.Slow(path) {
		l.toGoroutine(c, nil) // the goroutine reads the head again and serves it
		return
	}
	c.used = h.size
	c.deadline = 0
	s.served.Add(1)
	p := s.h.p
	pl := st.pools[rt.Backend.ID]
	c.x = exch{st: st, rt: rt, pl: pl, bs: st.backends[rt.Backend.ID], start: time.Now(), attempts: min(p.opts.Retries+1, len(pl.eps)), keep: !h.close}
	c.x.tried = c.x.triedBuf[:0]
	c.phase = cBusy
	l.tryEndpoint(c)
}

// tryEndpoint sends c's request to the next endpoint, as direct does.
func (l *evloop) tryEndpoint(c *lclient) {
	x := &c.x
	p := l.s.h.p
	ep := x.pl.pick(p.opts.Balance, x.tried, time.Unix(0, l.now))
	if ep == nil {
		l.answer(c, "", http.StatusBadGateway, "no backend endpoint could be reached")
		return
	}
	x.tried = append(x.tried, ep)
	ep.inflight.Add(1)
	x.ep, x.redialed = ep, false
	l.send(c, true)
}

// send sends c's request to x.ep on a pooled connection (if reuse) or a new one.
func (l *evloop) send(c *lclient, reuse bool) {
	x := &c.x
	var u *lupstream
	if reuse {
		u = l.idleGet(x.ep)
	}
	if u == nil {
		var err error
		if u, err = l.dial(x.ep); err != nil {
			l.failed(c, false, err)
			return
		}
	}
	u.c, x.u = c, u
	l.sink.b = u.out[:0]
	writeDirect(l.bw, &c.head, l.s.h, c.remote, x.ep.hostport)
	_ = l.bw.Flush()
	u.out, u.wo = l.sink.b, 0
	if u.phase == uConnect {
		return // the request goes when the connection is up
	}
	u.phase = uWrite
	l.upstreamWrite(u)
}

func (l *evloop) idleGet(ep *endpoint) *lupstream {
	conns := l.idle[ep]
	for n := len(conns); n > 0; n = len(conns) {
		u := conns[n-1]
		conns = conns[:n-1]
		if l.now-u.usedAt < int64(idleMax) {
			l.idle[ep] = conns
			u.reused, u.deadline = true, 0
			return u
		}
		u.phase = uConnect // not idle any more: closeUpstream leaves the list alone
		l.closeUpstream(u)
	}
	delete(l.idle, ep)
	return nil
}

// dial starts a non-blocking connection to ep.
func (l *evloop) dial(ep *endpoint) (*lupstream, error) {
	p := l.s.h.p
	a := ep.addr.Addr().Unmap()
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(ep.addr.Port()), Addr: a.As4()}
	if a.Is6() {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ep.addr.Port()), Addr: a.As16()}
	}
	opErr := func(op string, err error) error {
		return &dialError{&net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ep.addr), Err: os.NewSyscallError(op, err)}}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, opErr("socket", err)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if ka := int(p.dialer.KeepAlive / time.Second); ka > 0 { // as net.Dialer sets them
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, ka)
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, ka)
	}
	err = unix.Connect(fd, sa)
	if err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return nil, opErr("connect", err)
	}
	gen, werr := l.watch(fd)
	if werr != nil {
		unix.Close(fd)
		return nil, opErr("epoll_ctl", werr)
	}
	u := &lupstream{fd: fd, gen: gen, ep: ep, phase: uConnect, deadline: l.after(p.timeouts.connect)}
	if err == nil {
		u.phase = uWrite
	}
	l.slots[fd].u = u
	return u, nil
}

func (l *evloop) upstreamReady(u *lupstream) {
	switch u.phase {
	case uConnect:
		if !u.writable {
			return
		}
		if errno, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
			if err == nil {
				err = syscall.Errno(errno)
			}
			l.upstreamFailed(u, &dialError{&net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(u.ep.addr), Err: os.NewSyscallError("connect", err)}})
			return
		}
		u.phase = uWrite
		l.upstreamWrite(u)
	case uWrite:
		if u.writable {
			l.upstreamWrite(u)
		}
	case uHead:
		if u.readable {
			l.readHead(u)
		}
	case uBody:
		l.relay(u)
	}
}

func (l *evloop) upstreamWrite(u *lupstream) {
	for u.wo < len(u.out) {
		n, err := sockWrite(u.fd, u.out[u.wo:])
		if err == unix.EAGAIN {
			u.writable = false
			u.deadline = l.after(l.s.h.p.timeouts.send)
			return
		}
		if n <= 0 {
			l.upstreamFailed(u, &writeError{opError("write", u, err)})
			return
		}
		u.wo += n
	}
	u.phase = uHead
	u.deadline = l.after(l.s.h.p.timeouts.read)
	if u.readable {
		l.readHead(u)
	}
}

func opError(op string, u *lupstream, err error) error {
	if err == nil {
		err = io.ErrUnexpectedEOF
	} else {
		err = os.NewSyscallError(op, err)
	}
	return &net.OpError{Op: op, Net: "tcp", Addr: net.TCPAddrFromAddrPort(u.ep.addr), Err: err}
}

// fill reads what the backend sent into u.in. It returns false when it has to wait (u.readable is
// then false) and err when the connection ended or failed.
func (l *evloop) fill(u *lupstream) (bool, error) {
	if u.in == nil {
		u.in = l.getBuf()[:loopReadMax]
	}
	if u.r == u.w {
		u.r, u.w = 0, 0
	} else if u.w == len(u.in) && u.r > 0 {
		u.w = copy(u.in, u.in[u.r:u.w])
		u.r = 0
	}
	space := u.in[u.w:]
	n, err := sockRead(u.fd, space)
	if err == unix.EAGAIN {
		u.readable = false
		u.deadline = l.after(l.s.h.p.timeouts.read)
		return false, nil
	}
	if n <= 0 {
		if err == nil {
			return false, io.EOF
		}
		return false, opError("read", u, err)
	}
	u.readable = n == len(space) || u.hup
	u.w += n
	return true, nil
}

func (l *evloop) readHead(u *lupstream) {
	for {
		b := u.in[u.r:u.w]
		if end := headEnd(b); end >= 0 {
			rh := parseDirectHead(alias(b[:end-2])) // used before u.in changes, or copied (relay)
			rh.size = end
			l.gotHead(u, &rh)
			return
		}
		if u.w-u.r == loopReadMax || bareLF(b) {
			l.fallback(u) // the handler's reader decides
			return
		}
		if !u.readable {
			u.deadline = l.after(l.s.h.p.timeouts.read)
			return
		}
		ok, err := l.fill(u)
		if err != nil {
			if u.r == u.w {
				err = &noResponseError{err}
			} else if err == io.EOF {
				err = io.ErrUnexpectedEOF // a head cut short
			}
			l.upstreamFailed(u, err)
			return
		}
		if !ok {
			return
		}
	}
}

func (l *evloop) gotHead(u *lupstream, rh *directHead) {
	c := u.c
	noBody := c.head.method == http.MethodHead || !bodyAllowed(rh.code)
	// A chunked body needs an HTTP/1.1 client, and the goroutine lane sniffs a Content-Type from
	// what its first read of the body has, which the loop does not know.
	if rh.fallback || rh.chunked && (c.head.minor == 0 || !noBody && !rh.hasType) {
		l.fallback(u)
		return
	}
	x := &c.x
	u.r += rh.size
	x.rh, x.headSent = *rh, false
	x.left = rh.cl
	x.chunked = rh.chunked && !noBody
	if noBody || x.chunked {
		x.left = 0
	}
	x.o = outcome{code: rh.code, upstream: x.ep.hostport}
	u.phase, c.phase = uBody, cRelay
	l.relay(u)
}

// relay moves the response from u to its client until one side has to wait or it is complete.
func (l *evloop) relay(u *lupstream) {
	c := u.c
	x := &c.x
	for {
		if x.bodyErr != nil {
			l.aborted(c, x.bodyErr, true)
			return
		}
		if c.pending() {
			if done, err := l.flush(c); err != nil || !done {
				l.clientWait(c, u, err)
				return
			}
		}
		if x.headSent && x.bodyDone() {
			l.complete(c)
			return
		}
		avail := int64(u.w - u.r)
		if !x.headSent {
			var need int64
			if !x.rh.hasType {
				need = min(x.left, sniffLen)
			}
			ready, framing := avail >= need, ""
			if x.chunked {
				ready, framing = l.chunkedStart(x, u)
			}
			if x.bodyErr != nil {
				continue
			}
			if ready {
				if done, err := l.sendHead(c, u, need, framing); err != nil || !done {
					l.clientWait(c, u, err)
					return
				}
				continue
			}
		} else if n := l.bodyBytes(x, u.in[u.r:u.w]); n > 0 {
			done, err := l.output(c, u.in[u.r:u.r+n])
			u.r += n
			if err != nil || !done {
				l.clientWait(c, u, err)
				return
			}
			continue
		} else if x.bodyErr != nil || x.bodyDone() {
			continue
		}
		if !u.readable {
			if u.deadline == 0 { // a wait that began earlier goes on: the client's events do not extend it
				u.deadline = l.after(l.s.h.p.timeouts.read)
			}
			return
		}
		if !x.headSent && !x.ownHead { // fill may move the bytes the head's strings point into
			x.rh.head, x.rh.conn, x.rh.trailer = strings.Clone(x.rh.head), strings.Clone(x.rh.conn), strings.Clone(x.rh.trailer)
			x.ownHead = true
		}
		if _, err := l.fill(u); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			l.aborted(c, err, true)
			return
		}
	}
}

// clientWait ends relay's turn when the client's socket took less than it was given: the exchange is
// aborted when err says the client is gone, and otherwise waits, the backend not being timed while
// the client is slow to read, and the client having the send timeout from its last progress (flush
// clears the deadline when the socket takes bytes).
func (l *evloop) clientWait(c *lclient, u *lupstream, err error) {
	if err != nil {
		l.aborted(c, err, false)
		return
	}
	u.deadline = 0
	if c.deadline == 0 {
		c.deadline = l.after(l.s.h.p.opts.ClientSendTimeout)
	}
}

// sendHead writes the response head with the body bytes at hand, sniffing the first need of them
// for a Content-Type. It returns output's results.
func (l *evloop) sendHead(c *lclient, u *lupstream, need int64, framing string) (bool, error) {
	x := &c.x
	var sniff []byte
	if need > 0 {
		sniff = u.in[u.r : u.r+int(need)]
	}
	l.sink.b = l.obuf[:0]
	writeDirectHead(l.bw, c.head.minor, l.s.h.p.serverHdr[0], hstsFor(l.s.h, x.rt), &x.rh, sniff, framing, x.keep)
	_ = l.bw.Flush()
	k := l.bodyBytes(x, u.in[u.r:u.w])
	out := append(l.sink.b, u.in[u.r:u.r+k]...)
	l.obuf = out[:0]
	u.r += k
	x.headSent = true
	return l.output(c, out)
}

// bodyBytes returns how many of the bytes at the start of b are the response body's to relay now,
// and counts them as relayed. A malformed chunked body sets x.bodyErr after the valid bytes.
func (l *evloop) bodyBytes(x *exch, b []byte) int {
	if !x.chunked {
		k := int(min(int64(len(b)), x.left))
		x.left -= int64(k)
		x.o.sent += int64(k)
		return k
	}
	n, data, err := x.ch.scan(b)
	x.o.sent += data
	if err != nil {
		x.bodyErr = fmt.Errorf("reading a chunked response body: %w", err)
	}
	return n
}

const (
	framingChunked = "Transfer-Encoding: chunked\r\n"
	framingEmpty   = "Content-Length: 0\r\n"
)

// chunkedStart tells, before the head of a chunked response is sent, whether the head can go and
// with which framing field: chunked once the first chunk-size line says the body has data, and
// Content-Length: 0 when it says the body is empty, once the body (trailers included, which the
// goroutine lane drops then) has been read and dropped.
func (l *evloop) chunkedStart(x *exch, u *lupstream) (bool, string) {
	if !x.chStart {
		probe := x.ch
		n, _, err := probe.step(u.in[u.r:u.w])
		switch {
		case err != nil:
			x.bodyErr = fmt.Errorf("reading a chunked response body: %w", err)
			return false, ""
		case n == 0:
			return false, ""
		}
		// With trailers announced, the goroutine lane sends an empty body chunked, with them.
		x.chStart, x.chEmpty = true, probe.state != chData && x.rh.trailer == ""
	}
	if !x.chEmpty {
		return true, framingChunked // the line goes out with the head, from the scan
	}
	u.r += l.bodyBytes(x, u.in[u.r:u.w])
	return x.ch.done(), framingEmpty
}

// output sends b to c, or what the socket takes of it now, keeping the rest in c.out; over TLS it
// goes through the tls.Conn, whose records land in c.out. It returns false when bytes wait for the
// socket, and an error when the client is gone; the caller decides what that ends.
func (l *evloop) output(c *lclient, b []byte) (bool, error) {
	if c.tls != nil {
		if _, err := c.tls.Write(b); err != nil {
			return false, fmt.Errorf("writing to the client: %w", err)
		}
		return l.flush(c)
	}
	if !c.pending() {
		n, err := sockWrite(c.fd, b)
		switch {
		case err == unix.EAGAIN:
			n = 0
		case n <= 0:
			return false, fmt.Errorf("writing to the client: %w", err)
		case n == len(b):
			return true, nil
		}
		b = b[n:]
		c.writable = false
	}
	c.out = append(c.out, b...)
	return false, nil
}

// flush writes c.out, with output's results.
func (l *evloop) flush(c *lclient) (bool, error) {
	for c.pending() {
		if !c.writable {
			return false, nil
		}
		n, err := sockWrite(c.fd, c.out[c.sent:])
		switch {
		case err == unix.EAGAIN:
			c.writable = false
			if c.outShared { // the loop's TLS buffer serves the next connection meanwhile
				c.out, c.sent, c.outShared = bytes.Clone(c.out[c.sent:]), 0, false
			}
			return false, nil
		case n <= 0:
			return false, fmt.Errorf("writing to the client: %w", err)
		}
		c.sent += n
		if c.phase == cRelay {
			c.deadline = 0
		}
	}
	if c.outShared || cap(c.out) > loopReadMax {
		c.out = nil
	}
	c.out, c.sent, c.outShared = c.out[:0], 0, false
	return true, nil
}

func (c *lclient) pending() bool { return c.sent < len(c.out) }

// read reads c's socket, noting what the read says of its readiness: edge-triggered epoll tells
// again only once a read has found it empty (or short: the rest comes with an event of its own,
// unless the peer's end came with it).
func (c *lclient) read(b []byte) (int, error) {
	n, err := sockRead(c.fd, b)
	if err == unix.EAGAIN {
		c.readable = false
	} else if n > 0 {
		c.readable = n == len(b) || c.hup
	}
	return n, err
}

// sendPending writes what the socket takes now of the output still pending, before the connection
// is closed: over TLS, closing then sends the rest and an alert after it.
func (c *lclient) sendPending() {
	if c.pending() {
		if n, _ := sockWrite(c.fd, c.out[c.sent:]); n > 0 {
			c.sent += n
		}
	}
}

// complete ends an exchange whose response was relayed whole.
func (l *evloop) complete(c *lclient) {
	x := &c.x
	u := x.u
	x.u = nil
	if x.rh.close || u.r != u.w { // bytes past the response make the connection unusable
		l.closeUpstream(u)
	} else {
		l.idlePut(u)
	}
	x.ep.inflight.Add(-1)
	l.record(c)
	c.in = c.in[:copy(c.in, c.in[c.used:])]
	c.used = 0
	c.phase = cHead
	c.deadline = 0 // the send timeout's; readRequests sets the idle or header timeout
	if !x.keep || l.s.shutting.Load() {
		l.closeClient(c)
		return
	}
	*x = exch{}
	l.readRequests(c)
}

func (l *evloop) record(c *lclient) {
	x := &c.x
	h := &c.head
	l.s.h.record(x.st.routes[x.rt.ID], x.rt, reqLine{c.remote, h.method, h.host, h.target, h.proto()}, x.o, time.Since(x.start))
}

func (l *evloop) idlePut(u *lupstream) {
	u.c, u.phase, u.reused = nil, uIdle, false
	u.usedAt = l.now
	u.deadline = l.now + int64(idleMax)
	l.putBuf(u.in)
	u.in, u.r, u.w = nil, 0, 0
	conns := l.idle[u.ep]
	if len(conns) >= l.s.h.p.opts.MaxIdleConnsPerEndpoint {
		l.closeUpstream(u)
		return
	}
	l.idle[u.ep] = append(conns, u)
}

// upstreamFailed handles a failure before the response head came, as direct and exchangeDirect do:
// the request goes again on a new connection when a reused one was stale, then to the next
// endpoint, and is answered with 502 or 504 when none is left.
func (l *evloop) upstreamFailed(u *lupstream, err error) {
	c := u.c
	l.closeUpstream(u)
	c.x.u = nil
	l.failed(c, u.reused, err)
}

func (l *evloop) failed(c *lclient, reused bool, err error) {
	x := &c.x
	p := l.s.h.p
	if reused && !x.redialed && resendable(err, c.head.method) {
		x.redialed = true
		l.send(c, false)
		return
	}
	ep := x.ep
	ep.inflight.Add(-1)
	x.bs.upstreamErrors.Add(1)
	var de *dialError
	if errors.As(err, &de) {
		ep.downUntil.Store(l.now + int64(p.opts.PassiveHealthTimeout))
	}
	if len(x.tried) < x.attempts { // every request of this lane is idempotent
		x.bs.retries.Add(1)
		l.tryEndpoint(c)
		return
	}
	p.opts.Logger.V(2).Info("Upstream request failed", "upstream", ep.hostport, "err", err)
	l.answer(c, ep.hostport, failureCode(err), "the backend endpoint failed")
}

// aborted ends an exchange whose response was cut short after its head: what was sent stays sent
// and closing the client connection tells the client the rest is missing.
func (l *evloop) aborted(c *lclient, err error, fromBackend bool) {
	x := &c.x
	if fromBackend {
		l.s.h.p.opts.Logger.V(2).Info("Copying the response body failed", "upstream", x.ep.hostport, "err", err)
	}
	c.sendPending() // best effort: closing tells the client the rest is missing
	l.closeUpstream(x.u)
	x.u = nil
	x.ep.inflight.Add(-1)
	x.o.aborted = true
	l.record(c)
	l.closeClient(c)
}

// answer hands c to a goroutine that sends an error answer through the handler's writer and serves
// the connection from then on.
func (l *evloop) answer(c *lclient, upstream string, code int, msg string) {
	x := c.x
	l.toGoroutine(c, func(fc *fconn) bool {
		return fc.answer(x.st, x.rt, x.start, upstream, code, msg)
	})
}

// fallback hands c and its backend connection to a goroutine, whose handler reads and relays the
// response the loop does not relay itself.
func (l *evloop) fallback(u *lupstream) {
	c := u.c
	x := c.x
	hc, err := l.release(u)
	c.x.u = nil
	if err != nil {
		l.failed(c, false, err)
		return
	}
	h := l.s.h
	l.toGoroutine(c, func(fc *fconn) bool {
		o, keep := fc.respondHandler(x.rt, hc, x.ep)
		x.ep.inflight.Add(-1)
		h.record(x.st.routes[x.rt.ID], x.rt, fc.reqLine(), o, time.Since(x.start))
		return keep && !o.aborted
	})
}

// release takes u off the loop as an h1Conn, with the bytes read and not consumed.
func (l *evloop) release(u *lupstream) (*h1Conn, error) {
	l.unwatch(u.fd, true)
	f := os.NewFile(uintptr(u.fd), "")
	nc, err := net.FileConn(f)
	f.Close()
	pre := bytes.Clone(u.in[u.r:u.w])
	l.putBuf(u.in)
	u.in = nil
	if err != nil {
		return nil, &dialError{fmt.Errorf("taking over a backend connection: %w", err)}
	}
	to := l.s.h.p.timeouts
	itc := &idleTimeoutConn{Conn: nc, read: to.read, write: to.send}
	var rd io.Reader = itc
	if len(pre) > 0 {
		rd = io.MultiReader(bytes.NewReader(pre), itc)
	}
	hc := &h1Conn{c: itc, br: bufio.NewReaderSize(rd, loopReadMax), bw: bufio.NewWriterSize(itc, loopReadMax)}
	if tc, ok := nc.(*net.TCPConn); ok {
		hc.raw, _ = tc.SyscallConn()
	}
	return hc, nil
}

// toGoroutine takes c off the loop and serves it with a goroutine, first with then (see run) when it
// is not nil, from the bytes read and not consumed.
func (l *evloop) toGoroutine(c *lclient, then func(*fconn) bool) {
	l.unwatch(c.fd, true)
	var nc net.Conn = c.nc
	var unsent []byte // over TLS, what the socket did not take of the answer to a post-handshake message
	if c.tls != nil {
		nc, unsent = c.tls, bytes.Clone(c.out[c.sent:])
		c.sw.c = nil
	}
	if len(c.in) > c.used {
		nc = &prefixConn{Conn: nc, pre: bytes.Clone(c.in[c.used:])}
	}
	fc := l.s.newConn(nc)
	if then != nil { // the head again, in strings of its own
		parseHead(bytes.Clone(c.in[:c.used]), &fc.head)
		fc.parseURL(fc.head.target)
	}
	l.putBuf(c.in)
	c.in = nil
	l.s.track(fc)
	l.s.looped.Add(-1)
	go func() {
		if len(unsent) > 0 {
			_, _ = c.nc.Write(unsent)
		}
		l.s.run(fc, then)
	}()
}

func (l *evloop) closeClient(c *lclient) {
	unread := len(c.in) > c.used // they would reset the connection under the response
	l.unwatch(c.fd, unread)
	var conn net.Conn = c.nc
	if c.tls != nil {
		conn = c.tls
	}
	switch {
	case unread:
		if c.sw != nil {
			c.sw.c = nil // the goroutine may block
		}
		go lingerClose(conn)
	default:
		conn.Close() // over TLS, the close_notify alert goes out without blocking (LoopConn.Close)
	}
	l.putBuf(c.in)
	c.in = nil
	l.s.looped.Add(-1)
	if l.s.opts.Done != nil {
		l.s.opts.Done()
	}
}

// abandon closes c and the exchange it has in flight, after a panic.
func (l *evloop) abandon(c *lclient) {
	if c.phase != cHead && c.x.u != nil {
		l.closeUpstream(c.x.u)
		if c.x.ep != nil {
			c.x.ep.inflight.Add(-1)
		}
	}
	l.closeClient(c)
}

// lingerClose closes c after the goroutine lane's linger.
func lingerClose(c net.Conn) {
	linger(c)
	c.Close()
}

func (l *evloop) closeUpstream(u *lupstream) {
	if u.phase == uIdle {
		conns := l.idle[u.ep]
		for i, v := range conns {
			if v == u {
				conns = append(conns[:i], conns[i+1:]...)
				break
			}
		}
		if len(conns) == 0 {
			delete(l.idle, u.ep)
		} else {
			l.idle[u.ep] = conns
		}
	}
	l.unwatch(u.fd, false)
	unix.Close(u.fd)
	l.putBuf(u.in)
	u.in = nil
}

// sweep applies the deadlines that passed.
func (l *evloop) sweep() {
	l.nextSweep = l.now + int64(loopTick)
	timeout := func(op string, u *lupstream) error {
		return &net.OpError{Op: op, Net: "tcp", Addr: net.TCPAddrFromAddrPort(u.ep.addr), Err: os.ErrDeadlineExceeded}
	}
	for ep, conns := range l.idle {
		if ep.gone.Load() { // left the route table: the goroutine lane's pool was closed then
			for _, u := range slices.Clone(conns) {
				l.closeUpstream(u)
			}
		}
	}
	for fd := range l.slots {
		sl := l.slots[fd]
		if c := sl.c; c != nil && c.deadline != 0 && c.deadline <= l.now {
			switch c.phase {
			case cHead:
				l.closeClient(c) // idle, or a head that took too long
				continue
			case cRelay:
				l.cur = c
				l.s.h.p.opts.Logger.V(2).Info("Closing a client that stopped reading its response", "client", c.remote, "timeout", l.s.h.p.opts.ClientSendTimeout)
				l.aborted(c, nil, false) // the backend connection goes with it
				l.cur = nil
				continue
			}
		}
		u := sl.u
		if u == nil || u.deadline == 0 || u.deadline > l.now {
			continue
		}
		l.cur = u.c
		switch u.phase {
		case uIdle:
			l.closeUpstream(u)
		case uConnect:
			l.upstreamFailed(u, &dialError{timeout("dial", u)})
		case uWrite:
			l.upstreamFailed(u, &writeError{timeout("write", u)})
		case uHead:
			if u.r == u.w {
				l.upstreamFailed(u, &noResponseError{timeout("read", u)})
			} else {
				l.upstreamFailed(u, timeout("read", u))
			}
		case uBody:
			l.aborted(u.c, timeout("read", u), true)
		}
		l.cur = nil
	}
}

// closeAll closes every connection of a stopping loop.
func (l *evloop) closeAll() {
	for _, sl := range l.slots {
		if sl.c != nil {
			l.abandon(sl.c)
		}
	}
	for _, sl := range l.slots {
		if sl.u != nil {
			l.closeUpstream(sl.u)
		}
	}
	l.mu.Lock()
	inbox := l.inbox
	l.inbox = nil
	l.mu.Unlock()
	for _, nc := range inbox {
		nc.Close()
		l.s.looped.Add(-1)
		if l.s.opts.Done != nil {
			l.s.opts.Done()
		}
	}
}

// prefixConn is a client connection taken off a loop: it reads the bytes the loop read first. It
// embeds the interface, not the TCPConn, so that io.Copy cannot skip those bytes through WriteTo.
type prefixConn struct {
	net.Conn // a *net.TCPConn or a *tls.Conn
	pre      []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// LoopConn is a client socket for a TLS server (tls.Server(LoopConn, ...)) whose connection an event
// loop may serve after the handshake: until then, and after the loop hands it to a goroutine, it
// reads and writes as its TCPConn; while a loop serves it, reads do not block (errWouldBlock, which
// crypto/tls takes as temporary) and writes go to the loop's output buffer.
type LoopConn struct {
	*net.TCPConn
	c *lclient // the loop's connection while a loop serves it; only the loop's goroutine uses it then
}

// WrapTLS returns the socket to build c's TLS server on: a LoopConn when the server has event loops
// for it, c otherwise.
func (s *ConnServer) WrapTLS(c net.Conn) net.Conn {
	if tc, ok := c.(*net.TCPConn); ok && s.opts.EventLoops > 0 && s.h.tls {
		return &LoopConn{TCPConn: tc}
	}
	return c
}

func (w *LoopConn) Read(p []byte) (int, error) {
	c := w.c
	if c == nil {
		return w.TCPConn.Read(p)
	}
	if !c.readable {
		return 0, errWouldBlock
	}
	n, err := c.read(p)
	switch {
	case err == unix.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, os.NewSyscallError("read", err)
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func (w *LoopConn) Write(p []byte) (int, error) {
	if w.c == nil {
		return w.TCPConn.Write(p)
	}
	c := w.c
	if c.out == nil {
		c.out, c.outShared = c.l.tlsOut[:0], true
	}
	c.out = append(c.out, p...)
	if c.outShared {
		c.l.tlsOut = c.out[:0] // keep what it grew to
	}
	return len(p), nil
}

// Close sends what the loop's buffer holds (the close_notify alert) as far as the socket takes it
// without blocking, then closes.
func (w *LoopConn) Close() error {
	if c := w.c; c != nil {
		c.sendPending()
	}
	return w.TCPConn.Close()
}

// errWouldBlock is LoopConn's read error when the socket has nothing: temporary for crypto/tls, which
// keeps the records it has read so far and can be read again.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "the socket has nothing to read now" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

// adopt gives c to an event loop when the server has loops and c is a plain TCP connection (on a
// cleartext listener) or a tls.Conn over a LoopConn.
func (s *ConnServer) adopt(c net.Conn) bool {
	ok := false
	switch cc := c.(type) {
	case *net.TCPConn:
		ok = !s.h.tls
	case *tls.Conn:
		_, ok = cc.NetConn().(*LoopConn)
	}
	if !ok || s.opts.EventLoops <= 0 {
		return false
	}
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		return false
	}
	if s.loops == nil && !s.loopsFailed {
		for range s.opts.EventLoops {
			l, err := newLoop(s)
			if err != nil {
				s.h.p.opts.Logger.Error(err, "Starting an event loop failed; connections are served by goroutines")
				s.loopsFailed = true
				break
			}
			s.loops = append(s.loops, l)
		}
	}
	loops := s.loops
	s.mu.Unlock()
	if len(loops) == 0 {
		return false
	}
	s.looped.Add(1)
	if !loops[s.next.Add(1)%uint32(len(loops))].post(c) {
		s.looped.Add(-1)
		return false
	}
	return true
}

// Looped returns how many client connections the event loops serve now: those that went to a
// goroutine or closed are not counted.
func (s *ConnServer) Looped() int64 { return s.looped.Load() }

// track counts fc among the connections Shutdown waits for.
func (s *ConnServer) track(fc *fconn) {
	s.mu.Lock()
	s.conns[fc] = struct{}{}
	s.mu.Unlock()
}
