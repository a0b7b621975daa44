package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// DefaultMark is the socket mark on upstream queries: Istio's proxy mark,
// which capture rules leave alone.
const DefaultMark = 0x539

// DefaultUpstreamTimeout bounds one attempt at one upstream.
const DefaultUpstreamTimeout = 2 * time.Second

// forwarder sends queries to the resolv.conf upstreams in order, moving on
// to the next on a transport failure, a timeout, SERVFAIL or REFUSED.
type forwarder struct {
	upstreams []string // host:port
	timeout   time.Duration
	dial      DialFunc
}

// DialFunc opens an upstream socket ("udp" or "tcp").
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func newForwarder(upstreams []string, timeout time.Duration, mark int) *forwarder {
	if timeout <= 0 {
		timeout = DefaultUpstreamTimeout
	}
	d := &net.Dialer{Control: markControl(mark)}
	return &forwarder{upstreams: upstreams, timeout: timeout, dial: d.DialContext}
}

var errNoUpstream = errors.New("no upstream DNS server configured")

// exchange forwards the raw query b (whose parsed form is q) over the
// client's transport, so an upstream's TC on UDP reaches the client, which
// then retries over TCP. The reply is the first acceptable one; when every
// upstream failed, err is set and reply may hold the last SERVFAIL or
// REFUSED received.
func (f *forwarder) exchange(ctx context.Context, b []byte, q *query, tcp bool) (reply []byte, err error) {
	if len(f.upstreams) == 0 {
		return nil, errNoUpstream
	}
	for _, up := range f.upstreams {
		if ctx.Err() != nil {
			return reply, ctx.Err()
		}
		r, e := f.once(ctx, up, b, q, tcp)
		if e != nil {
			err = fmt.Errorf("upstream %s: %w", up, e)
			continue
		}
		rcode := dnsmessage.RCode(r[3] & 0x0f)
		if rcode == dnsmessage.RCodeServerFailure || rcode == dnsmessage.RCodeRefused {
			reply, err = r, fmt.Errorf("upstream %s: %v", up, rcode)
			continue
		}
		return r, nil
	}
	return reply, err
}

// once asks one upstream, on a socket of its own: the kernel then only
// delivers that upstream's datagrams to it, and the ID and question are
// still checked so a stray packet is not taken as the answer.
func (f *forwarder) once(ctx context.Context, up string, b []byte, q *query, tcp bool) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	network := "udp"
	if tcp {
		network = "tcp"
	}
	c, err := f.dial(ctx, network, up)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	// Close on cancellation too (server shutdown) so reads return now.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if tcp {
		return exchangeTCP(c, b, q)
	}
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	buf := make([]byte, maxMsgSize)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if matches(buf[:n], q) {
			return append([]byte(nil), buf[:n]...), nil
		}
	}
}

func exchangeTCP(c net.Conn, b []byte, q *query) ([]byte, error) {
	msg := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(msg, uint16(len(b)))
	copy(msg[2:], b)
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	r, err := readTCPMsg(c)
	if err != nil {
		return nil, err
	}
	if !matches(r, q) {
		return nil, errors.New("reply does not match the query")
	}
	return r, nil
}

// readTCPMsg reads one length-prefixed message (RFC 1035 4.2.2).
func readTCPMsg(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint16(l[:])
	if n < 12 {
		return nil, fmt.Errorf("message of %d bytes is shorter than a header", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// matches reports whether b is a response to q: same ID, same question.
func matches(b []byte, q *query) bool {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil || !h.Response || h.ID != q.header.ID {
		return false
	}
	rq, err := p.Question()
	if err != nil {
		// An upstream may answer FORMERR or NOTIMP without the question.
		return errors.Is(err, dnsmessage.ErrSectionDone) && h.RCode != dnsmessage.RCodeSuccess
	}
	return rq.Type == q.question.Type && rq.Class == q.question.Class &&
		strings.EqualFold(rq.Name.String(), q.question.Name.String())
}
