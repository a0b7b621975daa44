package dns

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// handle answers one query from src (the client's address, which places
// it for node-mode answers; zero when unknown); nil means no reply (not
// even FORMERR is possible). It never panics on any input (FuzzHandle).
func (s *Server) handle(ctx context.Context, b []byte, src netip.Addr, tcp bool) []byte {
	q, err := parseQuery(b)
	if errors.Is(err, errDrop) {
		return nil
	}
	p := protoIndex(tcp)
	t := qtypeIndex(q.question.Type)
	s.metrics.requests[t][p].Add(1)
	if err != nil {
		return errorReply(&q, dnsmessage.RCodeFormatError, false)
	}
	if q.header.OpCode != 0 {
		return errorReply(&q, dnsmessage.RCodeNotImplemented, true)
	}
	max := q.maxSize(tcp)
	if q.question.Class == dnsmessage.ClassINET {
		if a, v := s.table.cur.Load().find(q.question.Name.String(), src, s.cfg.Clients); v != unknown {
			return tableReply(&q, a, v, max)
		}
	}
	if r := s.cache.get(&q, max); r != nil {
		s.metrics.cacheHits[t][p].Add(1)
		return r
	}
	s.metrics.upstream[t][p].Add(1)
	start := time.Now()
	reply, err := s.fwd.exchange(ctx, b, &q, tcp)
	s.metrics.duration[t][p].observe(time.Since(start).Seconds())
	if err != nil {
		s.metrics.failures[t][p].Add(1)
		if reply == nil {
			return errorReply(&q, dnsmessage.RCodeServerFailure, true)
		}
	} else {
		s.cache.put(&q, reply)
	}
	return fitReply(reply, &q, max)
}

// fitReply passes an upstream reply through unchanged when it fits the
// client's size, and truncates it (TC) when it does not, e.g. a UDP client
// offering less EDNS space than the upstream answered with.
func fitReply(reply []byte, q *query, max int) []byte {
	if len(reply) <= max {
		return reply
	}
	var msg dnsmessage.Message
	if err := msg.Unpack(reply); err != nil {
		// Too big and unreadable: an empty truncated answer still sends
		// the client to TCP, where it fits.
		h := q.replyHeader(dnsmessage.RCode(reply[3]&0x0f), false)
		h.Truncated = true
		msg = dnsmessage.Message{Header: h, Questions: []dnsmessage.Question{q.question}}
		b, _ := msg.Pack()
		return b
	}
	return packFit(&msg, max)
}
