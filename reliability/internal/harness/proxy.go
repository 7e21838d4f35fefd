package harness

import (
	"io"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy that a test can make misbehave: cut every
// connection (mid-frame, since it does not look at what it carries),
// throttle, or stop forwarding without closing (a half-open path).
type Proxy struct {
	Addr   string
	target string
	ln     net.Listener

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	blackout bool
	rate     int // bytes per second per direction; 0 = unlimited
	closed   bool
	// Cuts counts connections cut by Cut.
	Cuts int
}

// NewProxy listens on a loopback port and forwards to target.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	go p.accept()
	return p, nil
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *Proxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		if p.closed {
			return false
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *Proxy) handle(in net.Conn) {
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	if !p.track(in, true) || !p.track(out, true) {
		in.Close()
		out.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(out, in) })
	wg.Go(func() { p.pipe(in, out) })
	wg.Wait()
	in.Close()
	out.Close()
	p.track(in, false)
	p.track(out, false)
}

func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for {
				p.mu.Lock()
				black, rate := p.blackout, p.rate
				p.mu.Unlock()
				if !black {
					if rate > 0 {
						time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
					}
					break
				}
				time.Sleep(10 * time.Millisecond) // hold the bytes: the path is dead
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			} else if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
	}
}

// Cut closes every open connection at once (with RST where possible),
// whatever they were in the middle of.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
		p.Cuts++
	}
}

// Blackout makes the proxy hold every byte (on) or forward again (off),
// without closing anything: both ends see a silent, half-open path.
func (p *Proxy) Blackout(on bool) {
	p.mu.Lock()
	p.blackout = on
	p.mu.Unlock()
}

// Throttle limits each direction of each connection to bytesPerSecond (0:
// unlimited).
func (p *Proxy) Throttle(bytesPerSecond int) {
	p.mu.Lock()
	p.rate = bytesPerSecond
	p.mu.Unlock()
}

// Open returns the number of open connections (two per proxied one).
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Cut()
}
