package upstream

import (
	"net/netip"
	"sync"
	"time"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// DefaultOriginalDstCleanup is Envoy's cleanup_interval default: a host an
// ORIGINAL_DST cluster made on demand lives until a whole interval passes
// without a request to it.
const DefaultOriginalDstCleanup = 5 * time.Second

// origDst holds the hosts an ORIGINAL_DST cluster made on demand, one per
// destination address, so the Endpoint (and its connection pools) of a
// destination is found again by the next request to it. The hosts are not
// in the balancer: nothing picks them, the request names them.
type origDst struct {
	mu    sync.Mutex
	hosts map[netip.AddrPort]*origDstHost
	// stop ends the cleanup loop; done is closed when it has returned.
	// Both are nil until the first host is made.
	stop, done chan struct{}
	closed     bool
}

type origDstHost struct {
	host *lb.Host
	// used is set by every lookup and cleared by every cleanup pass; a
	// host found unused by a pass has been idle a whole interval.
	used bool
}

// OriginalDstHost returns the host for addr, the destination of a request
// to an ORIGINAL_DST cluster, making it on first use. The same *lb.Host is
// returned for the same address until the cleanup loop retires it after a
// cleanup_interval without use, so Endpoint(h) keeps its pools. It returns
// nil for an invalid address or a closed cluster (503 UH for the caller).
func (c *Cluster) OriginalDstHost(addr netip.AddrPort) *lb.Host {
	if !addr.IsValid() || addr.Port() == 0 {
		return nil
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if p := c.Spec().OriginalDstPortOverride; p != 0 { // upstream_port_override
		addr = netip.AddrPortFrom(addr.Addr(), uint16(p))
	}
	o := &c.orig
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	if oh := o.hosts[addr]; oh != nil {
		oh.used = true
		return oh.host
	}
	if o.hosts == nil {
		o.hosts = map[netip.AddrPort]*origDstHost{}
	}
	if o.stop == nil {
		// The loop starts with the first host, so clusters that never see
		// an HTTP request (tcp_proxy dials directly) run no goroutine.
		o.stop, o.done = make(chan struct{}), make(chan struct{})
		go c.origDstCleanupLoop(o.stop, o.done)
	}
	h := &lb.Host{Address: addr.String(), Weight: 1, Health: state.HealthHealthy}
	o.hosts[addr] = &origDstHost{host: h, used: true}
	return h
}

// origDstCleanupInterval is the cluster's cleanup_interval or the default.
func (c *Cluster) origDstCleanupInterval() time.Duration {
	if d := c.spec.Load().OriginalDstCleanupInterval; d > 0 {
		return d
	}
	return DefaultOriginalDstCleanup
}

// origDstCleanupLoop retires idle hosts every cleanup_interval until stop
// is closed. The interval is re-read each round so a CDS update applies.
func (c *Cluster) origDstCleanupLoop(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTimer(c.origDstCleanupInterval())
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c.origDstCleanup()
		t.Reset(c.origDstCleanupInterval())
	}
}

// origDstCleanup is one cleanup pass: hosts not used since the last pass
// and with no request in flight are forgotten and their pools closed.
func (c *Cluster) origDstCleanup() {
	o := &c.orig
	var gone []*lb.Host
	o.mu.Lock()
	for addr, oh := range o.hosts {
		if oh.used || oh.host.Active() > 0 {
			oh.used = false
			continue
		}
		delete(o.hosts, addr)
		gone = append(gone, oh.host)
	}
	o.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	c.mu.Lock()
	var eps []*Endpoint
	for _, h := range gone {
		if e := c.endpoints[h]; e != nil {
			eps = append(eps, e)
			delete(c.endpoints, h)
		}
	}
	c.mu.Unlock()
	for _, e := range eps {
		e.close()
	}
}

// closeOrigDst stops the cleanup loop and waits for it; the endpoints are
// closed by Cluster.close with the others.
func (c *Cluster) closeOrigDst() {
	o := &c.orig
	o.mu.Lock()
	o.closed = true
	stop, done := o.stop, o.done
	o.stop = nil
	o.hosts = nil
	o.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// originalDstHosts reports how many on-demand hosts the cluster holds
// (tests).
func (c *Cluster) originalDstHosts() int {
	c.orig.mu.Lock()
	defer c.orig.mu.Unlock()
	return len(c.orig.hosts)
}
